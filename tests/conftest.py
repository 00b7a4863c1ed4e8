"""Test setup: 8 simulated CPU devices and fast-compiling XLA, set before JAX is imported.

Subprocesses started by tests (end-to-end runs of `vdiff.main`) inherit these
variables, so they see the same devices, flags and compilation cache.
"""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = " ".join([
    os.environ.get("XLA_FLAGS", ""),
    "--xla_force_host_platform_device_count=8",
    # Tests are dominated by compile time; trade run time for compile time.
    "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true",
]).strip()
# A fresh compilation cache per test session, shared with the session's subprocesses, so
# restarted runs in the resume tests load their compiled step instead of recompiling.
os.environ.setdefault("VDIFF_COMPILATION_CACHE", tempfile.mkdtemp(prefix="vdiff_jax_cache_"))

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache():
    from vdiff import runtime
    return runtime.setup_compilation_cache()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """The tiny moving-digits dataset (`vdm_digits:runlocal`), built once per test worker
    in-process, for the end-to-end runs of `vdiff.main`."""
    from tests.helpers import load_config
    from vdiff.data import pipeline
    path = str(tmp_path_factory.mktemp("datasets"))
    config = load_config("vdm_digits", "runlocal")
    config.data.data_dir = path
    pipeline.get_data_source(config.data, split="train")
    return path


# Files in decreasing order of their tests' total time (≥ 15 s; a `--durations=0` run on
# the 2-core CI machine). With `--dist loadscope` each file runs whole on one worker, in
# collection order: starting these first keeps one long file from running alone at the end.
LONGEST_FILES_FIRST = (
    "test_pvdm.py", "test_train_loop.py", "test_colabs.py", "test_sinfusion_cli.py",
    "test_sharding.py", "test_evaluators.py", "test_video_data.py",
    "test_sinfusion_single_runs.py", "test_dreampose.py", "test_sinfusion.py",
    "test_train_interrupts.py", "test_eval_metrics.py", "test_pvdm_unet.py", "test_cascade_sr.py",
    "test_pvdm_autoencoder.py", "test_unet.py", "test_interpolation.py", "test_sampling.py",
    "test_fused_norm.py", "test_samplers.py", "test_sd_unet.py", "test_multiprocess.py",
    "test_eval_cli.py", "test_guidance.py", "test_diffusion.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within files
