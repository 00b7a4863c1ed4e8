"""Every notebook in colabs/ runs top to bottom (nbclient, one fresh kernel each).

The kernel is this interpreter (`sys.executable`, registered under a private kernel name
in a temporary Jupyter path, so no system or user kernelspec is needed), started with
cwd = colabs/ and `VDIFF_NOTEBOOK_SMOKE=1`, which the notebooks read to shrink every
setting to the minimum, and `VDIFF_NOTEBOOK_WORKDIR` = an empty temporary directory, where
they write their runs instead of the repository's `workdirs/` (so a stale run there is never
resumed). quickstart.ipynb reads neither: it trains its fixed 20 steps into
`workdirs/colab_quickstart` (and only restores a finished run found there).

JAX in the kernel: conftest.py sets XLA_FLAGS for 8 simulated CPU devices. The kernel
inherits the fast-compile flags but not the device count, so it sees 1 CPU device like a
Colab CPU runtime (the notebooks also work with 8; `VDIFF_NOTEBOOK_DEVICES=8` checks it).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import resource
import time
import warnings

import pytest

from tests.helpers import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

COLABS = os.path.join(REPO, "colabs")
NOTEBOOKS = sorted(glob.glob(os.path.join(COLABS, "*.ipynb")))
KERNEL_NAME = "vdiff-test-python"
CELL_TIMEOUT_S = 300
PARITY = ("torch", "diffusers", "transformers")  # the [parity] extra (not in [test])


def _missing_parity(nb) -> list[str]:
    """The [parity] packages a notebook's code cells import that are not installed."""
    code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    return [m for m in PARITY if re.search(rf"^\s*(import|from) {m}\b", code, re.M)
            and importlib.util.find_spec(m) is None]


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A kernelspec for this interpreter and the environment the kernel starts with."""
    from ipykernel.kernelspec import write_kernel_spec

    jupyter_dir = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(str(jupyter_dir / "kernels" / KERNEL_NAME))  # argv[0] = sys.executable
    env = dict(os.environ)
    env["JUPYTER_PATH"] = os.pathsep.join(
        [str(jupyter_dir)] + [p for p in [os.environ.get("JUPYTER_PATH")] if p])
    devices = os.environ.get("VDIFF_NOTEBOOK_DEVICES", "1")
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "",
                   os.environ.get("XLA_FLAGS", "")).split()
    if devices != "1":
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    env["JAX_PLATFORMS"] = os.environ.get("JAX_PLATFORMS", "cpu")
    env["VDIFF_NOTEBOOK_SMOKE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([REPO] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("TQDM_DISABLE", "1")
    return env


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _failure_message(path: str, nb, error: Exception) -> str:
    """The failing cell's index, source and error (from its error output, without colours)."""
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                traceback = ANSI.sub("", "\n".join(out.get("traceback", [])))
                return (f"{os.path.basename(path)}: cell {index} failed with "
                        f"{out.get('ename')}: {out.get('evalue')}\n"
                        f"--- cell {index} source ---\n{cell.source}\n"
                        f"--- traceback ---\n{traceback[-8000:]}")
    return f"{os.path.basename(path)}: {type(error).__name__}: {ANSI.sub('', str(error))[-8000:]}"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_colabs_found():
    names = [os.path.basename(p) for p in NOTEBOOKS]
    assert "quickstart.ipynb" in names, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_env, tmp_path, monkeypatch):
    with warnings.catch_warnings():  # quickstart.ipynb predates cell ids
        warnings.simplefilter("ignore", nbformat.validator.MissingIDFieldWarning)
        nb = nbformat.read(path, as_version=4)
    missing = _missing_parity(nb)
    if missing:  # e.g. interpolation.ipynb's tiny random SD model is built with diffusers/torch
        pytest.skip(f"needs the [parity] extra: {', '.join(missing)} not installed")
    env = dict(kernel_env, VDIFF_NOTEBOOK_WORKDIR=str(tmp_path))
    monkeypatch.setenv("JUPYTER_PATH", env["JUPYTER_PATH"])  # where the kernelspec is looked up
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": COLABS}}, allow_errors=False)
    start = time.perf_counter()
    cpu_start = _children_cpu()
    failure = None
    try:
        client.execute(cwd=COLABS, env=env)
    except nbclient.exceptions.CellTimeoutError as e:
        failure = f"{os.path.basename(path)}: a cell ran past {CELL_TIMEOUT_S}s: {e}"
    except nbclient.exceptions.CellExecutionError as e:
        failure = _failure_message(path, nb, e)
    if failure is not None:  # outside the except block: no chained traceback in the report
        pytest.fail(failure, pytrace=False)
    elapsed = time.perf_counter() - start
    # The kernel has exited and been reaped here, so its CPU time is in RUSAGE_CHILDREN.
    print(f"\n{os.path.basename(path)}: executed in {elapsed:.1f}s wall, kernel "
          f"{_children_cpu() - cpu_start:.1f}s CPU")


def _setup_cell(path: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nbformat.validator.MissingIDFieldWarning)
        nb = nbformat.read(path, as_version=4)
    return next(cell.source for cell in nb.cells if cell.cell_type == "code")


def test_every_notebook_starts_with_the_same_setup_cell():
    cells = {os.path.basename(p): _setup_cell(p) for p in NOTEBOOKS}
    assert len(set(cells.values())) == 1, f"first code cells differ: {sorted(cells)}"
    assert re.search(r'^REPO_URL = "', next(iter(cells.values())), re.M)


@pytest.mark.parametrize("runtime,extra", [("cpu", ""), ("gpu 580.65.06", "[cuda]"),
                                           ("gpu 550.54.15", "[cuda12]"), ("tpu", "[tpu]")])
def test_setup_cell_on_a_fresh_runtime(runtime, extra, tmp_path):
    """Outside a checkout the first cell stops with a clear message while REPO_URL is the
    placeholder; once set, it clones and installs vdiff with the runtime's extra: CUDA 13
    wheels where the NVIDIA driver is 580 or newer, CUDA 12 below (VDIFF_SETUP_DRY_RUN=1
    prints the commands instead of running them)."""
    import subprocess
    import sys
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*") or os.path.isdir(
            "/content/vdiff"):
        pytest.skip("this host looks like a TPU VM or a Colab runtime with the clone")
    source = _setup_cell(NOTEBOOKS[0])
    bin_dir = tmp_path / "bin"  # PATH: no nvidia-smi, or one that succeeds
    bin_dir.mkdir()
    if runtime.startswith("gpu"):  # an nvidia-smi that reports this driver version
        version = runtime.split()[1]
        (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\necho {version}\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("COLAB_TPU_ADDR", "TPU_NAME")}
    env.update(PATH=str(bin_dir), VDIFF_SETUP_DRY_RUN="1")
    if runtime == "tpu":
        env["TPU_NAME"] = "local"
    fresh = tmp_path / "content"
    fresh.mkdir()

    def run(src):
        return subprocess.run([sys.executable, "-c", src], cwd=fresh, env=env,
                              capture_output=True, text=True, timeout=60)

    result = run(source)
    assert result.returncode != 0 and "set REPO_URL in this cell" in result.stderr
    url = "https://example.org/someone/vdiff.git"
    result = run(re.sub(r'^REPO_URL = ".*?"', f'REPO_URL = "{url}"', source, flags=re.M))
    assert result.returncode == 0, result.stderr
    commands = [x for x in result.stdout.splitlines() if x.startswith("$ ")]
    assert commands == [f"$ git clone --depth=1 {url} {fresh}/vdiff",
                        f"$ {sys.executable} -m pip install -q -e {fresh}/vdiff{extra}"]
