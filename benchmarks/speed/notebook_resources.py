"""What a notebook needs: runs its code cells top to bottom in this process (no Jupyter) and
records wall time per cell and in all, peak host memory (max RSS) and peak accelerator memory
(JAX's `peak_bytes_in_use`), as JSON: the numbers behind each notebook's "Needs" line.

    python benchmarks/speed/notebook_resources.py colabs/guided_sampling.ipynb --out guided.json

The cells run with the notebook's folder as the current directory, as Jupyter runs them, so
the set-up cell finds the checkout and installs nothing. IPython's `display` is a no-op
stand-in where IPython is not installed (the lent GPU machine). The notebooks read
VDIFF_NOTEBOOK_SMOKE and VDIFF_NOTEBOOK_WORKDIR as in tests/test_colabs.py. To time a Colab
CPU runtime (2 vCPUs) elsewhere, run with JAX_PLATFORMS=cpu under `taskset -c 0,1`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import time
import types


def _stub_ipython() -> None:
    try:
        import IPython.display  # noqa: F401
    except ImportError:
        ipython, display = types.ModuleType("IPython"), types.ModuleType("IPython.display")
        display.Image = lambda *a, **k: None
        display.display = lambda *a, **k: None
        ipython.display = display
        sys.modules.update({"IPython": ipython, "IPython.display": display})


def _commit(folder: str) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("VDIFF_COMMIT", "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("notebook")
    parser.add_argument("--out", default="", help="JSON file to write (default: print only)")
    args = parser.parse_args()
    path = os.path.abspath(args.notebook)
    with open(path, encoding="utf-8") as f:
        cells = ["".join(c["source"]) for c in json.load(f)["cells"] if c["cell_type"] == "code"]
    _stub_ipython()
    os.chdir(os.path.dirname(path))
    namespace: dict = {"__name__": "__main__"}
    seconds = []
    start = time.perf_counter()
    for i, source in enumerate(cells):
        t0 = time.perf_counter()
        exec(compile(source, f"<{os.path.basename(path)} code cell {i}>", "exec"), namespace)
        seconds.append(round(time.perf_counter() - t0, 1))
        print(f"notebook_resources: code cell {i} took {seconds[-1]} s", flush=True)
    total = time.perf_counter() - start

    import jax

    device = jax.local_devices()[0]
    stats = device.memory_stats() or {}  # empty on CPU
    result = {
        "benchmark": "notebook_resources",
        "notebook": os.path.basename(path),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(os.path.dirname(path)),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": f"{jax.device_count()} x {device.device_kind}",
        "cpus": len(os.sched_getaffinity(0)),
        "smoke": os.environ.get("VDIFF_NOTEBOOK_SMOKE") == "1",
        "preset": namespace.get("PRESET", ""),
        "wall_s": round(total, 1),
        "cell_wall_s": seconds,
        "peak_host_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "peak_device_gib": (round(stats["peak_bytes_in_use"] / 2**30, 2)
                            if "peak_bytes_in_use" in stats else None),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
