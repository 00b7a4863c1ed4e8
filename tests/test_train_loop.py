"""End-to-end runs of `python -m vdiff.main`: outputs, resume after SIGKILL/SIGTERM, NaN guard.

These start real subprocesses on the `runlocal` digits config. The tiny dataset is
built once per session; the JAX compilation cache (conftest) makes restarts cheap.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import REPO
from vdiff.train.checkpoint import load_raw

CONFIG = os.path.join(REPO, "configs", "vdm_digits.py")


def _cmd(workdir, data_dir, arg="runlocal", *flags):
    return [sys.executable, "-m", "vdiff.main", f"--config={CONFIG}:{arg}",
            f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", *flags]


def run_main(workdir, data_dir, arg="runlocal", *flags, timeout=600):
    return subprocess.run(_cmd(workdir, data_dir, arg, *flags), cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def start_main(workdir, data_dir, arg="runlocal", *flags):
    return subprocess.Popen(_cmd(workdir, data_dir, arg, *flags), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def checkpoint_steps(workdir):
    d = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(d):
        return []
    return sorted(int(n) for n in os.listdir(d) if n.isdigit())


RESUME_FLAGS = ("--config.train.checkpoint_every=2", "--config.train.log_every=2",
                "--config.train.keep_checkpoints=100")


# The shared run is as short as its users allow: two checkpoints (the corrupt-checkpoint
# test walks back from the newest to the one before) and two log steps. Each extra step
# here costs a train step and a checkpoint save (≈2–4 s on the 2-core CI machine).
REF_STEPS = 4


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, data_dir):
    """An uninterrupted REF_STEPS-step run."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    result = run_main(workdir, data_dir, f"runlocal,steps={REF_STEPS}", *RESUME_FLAGS)
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir, result


def test_end_to_end_outputs(reference_run):
    workdir, result = reference_run
    log = result.stdout + result.stderr
    assert f"step {REF_STEPS}/{REF_STEPS}" in log and "ETA" in log and "steps/s" in log
    assert checkpoint_steps(workdir) == [2, 4]  # checkpoint_every=2, keep_checkpoints=100
    lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [x["step"] for x in lines] == [2, 4]
    for key in ("loss", "loss_video", "loss_image", "grad_norm", "param_norm", "update_norm",
                "learning_rate", "steps_per_sec"):
        assert all(np.isfinite(x[key]) for x in lines), key
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    samples = os.path.join(workdir, "samples", f"step_{REF_STEPS:07d}")
    assert os.path.getsize(os.path.join(samples, "grid.png")) > 0
    assert os.path.getsize(os.path.join(samples, "sample_00.mp4")) > 0
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["method"] == "vdm"


def test_parameter_table_written_and_logged(reference_run):
    """clu.parameter_overview's table: in full in WORKDIR/parameters.txt, and in the log."""
    import jax
    workdir, result = reference_run
    text = open(os.path.join(workdir, "parameters.txt")).read()
    _, state, _ = load_raw(os.path.join(workdir, "checkpoints"))
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
    assert f"Total: {num_params:,} -- " in text
    assert "| Name" in text and "Sharding" in text
    assert f"Total: {num_params:,} -- " in result.stdout + result.stderr


# ≈3 min with its own uninterrupted reference; the SIGTERM resume test and the multi-process
# test cover resume by default
@pytest.mark.slow
def test_resume_after_random_sigkills_matches_uninterrupted(data_dir, tmp_path):
    # 12 steps (longer than the shared REF_STEPS run) so that the run can be killed twice
    ref_dir = str(tmp_path / "uninterrupted")
    result = run_main(ref_dir, data_dir, "runlocal,steps=12", *RESUME_FLAGS)
    assert result.returncode == 0, result.stdout + result.stderr
    workdir = str(tmp_path / "killed")
    rnd = random.Random(1234)
    kills = 0
    for _ in range(3):
        before = checkpoint_steps(workdir)
        proc = start_main(workdir, data_dir, "runlocal,steps=12", *RESUME_FLAGS)
        deadline = time.time() + 300
        # Wait for this process to write a checkpoint of its own, then kill it at a random moment.
        while time.time() < deadline and proc.poll() is None:
            if len(checkpoint_steps(workdir)) > len(before):
                break
            time.sleep(0.05)
        time.sleep(rnd.uniform(0.0, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
    assert kills >= 2, "the run finished before it could be killed; make it longer"
    result = run_main(workdir, data_dir, "runlocal,steps=12", *RESUME_FLAGS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resumed from" in result.stdout + result.stderr

    step_a, state_a, data_a = load_raw(os.path.join(ref_dir, "checkpoints"))
    step_b, state_b, data_b = load_raw(os.path.join(workdir, "checkpoints"))
    assert step_a == step_b == 12
    assert data_a == data_b
    leaves_a, leaves_b = _leaves(state_a), _leaves(state_b)
    assert len(leaves_a) == len(leaves_b)
    for a, b in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(a, b)


def _leaves(tree):
    import jax
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_nan_stops_run_and_keeps_last_checkpoint(reference_run, data_dir, tmp_path):
    ref_dir, _ = reference_run
    workdir = str(tmp_path / "nan")
    shutil.copytree(ref_dir, workdir)
    before = load_raw(os.path.join(workdir, "checkpoints"))
    no_samples = "--config.sample.num_samples=0"  # the final samples are not the point
    result = run_main(workdir, data_dir, f"runlocal,steps={REF_STEPS + 4}", *RESUME_FLAGS,
                      "--config.train.lr=nan", no_samples)
    log = result.stdout + result.stderr
    assert result.returncode == 2, log
    assert "non-finite" in log and "Traceback" not in log
    assert checkpoint_steps(workdir)[-1] == REF_STEPS
    after = load_raw(os.path.join(workdir, "checkpoints"))
    for a, b in zip(_leaves(before[1]), _leaves(after[1])):
        np.testing.assert_array_equal(a, b)

    # Tolerated: the non-finite steps are skipped (the weights stay those of step REF_STEPS),
    # and an elapsed wall-clock budget stops the run at the next log step like SIGTERM.
    result = run_main(workdir, data_dir, f"runlocal,steps={REF_STEPS + 4}", *RESUME_FLAGS,
                      "--config.train.lr=nan", "--config.train.max_nonfinite_steps=100",
                      "--config.train.max_train_seconds=1e-9", no_samples)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert "skipped 2 non-finite step(s)" in log and f"stopped at step {REF_STEPS + 2}" in log
    assert checkpoint_steps(workdir)[-1] == REF_STEPS + 2
    skipped = load_raw(os.path.join(workdir, "checkpoints"))
    for a, b in zip(_leaves(before[1]["params"]), _leaves(skipped[1]["params"])):
        np.testing.assert_array_equal(a, b)


def test_sample_cli_extend(reference_run, data_dir, tmp_path):
    ref_dir, _ = reference_run
    # `interpolate` takes the same path through the CLI; test_sampling.py checks its frames.
    # 6 frames: the free window and one window conditioned on sampled frames (each window
    # costs ≈10 s here); test_sampling.py checks longer extensions and the trimming.
    for application, flags, frames in [("extend", ["--num_frames=6"], 6)]:
        out = str(tmp_path / application)
        # Keys that only shape sampling differ from the run's config.json (fine), and so
        # does a training key (the run's value is used).
        result = run_main(ref_dir, data_dir, f"runlocal,steps={REF_STEPS}", "--mode=sample",
                          f"--application={application}", "--sampler=ddim", "--num_steps=3",
                          "--num_samples=2", f"--output_dir={out}", *flags,
                          "--config.sample.num_steps=3", "--config.train.lr=0.5")
        assert result.returncode == 0, result.stdout + result.stderr
        videos = np.load(os.path.join(out, "samples.npz"))["videos"]
        assert videos.shape == (2, frames, 16, 16, 1) and videos.dtype == np.uint8
        for name in ("sample_00.mp4", "sample_01.gif", "grid.png", "info.json"):
            assert os.path.getsize(os.path.join(out, name)) > 0


def test_sample_without_config_uses_the_runs_config_json(reference_run, tmp_path):
    """--mode=sample/eval default to WORKDIR/config.json; training still needs --config."""
    ref_dir, _ = reference_run
    out = str(tmp_path / "no_config")
    result = subprocess.run([sys.executable, "-m", "vdiff.main", f"--workdir={ref_dir}",
                             "--mode=sample", "--sampler=ddim", "--num_steps=2",
                             "--num_samples=2", f"--output_dir={out}"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert np.load(os.path.join(out, "samples.npz"))["videos"].shape[:2] == (2, 4)
    train = subprocess.run([sys.executable, "-m", "vdiff.main", f"--workdir={tmp_path}/t"],
                           cwd=REPO, capture_output=True, text=True, timeout=600)
    assert train.returncode == 2 and "Traceback" not in train.stderr
    assert "--config is required for --mode=train" in train.stderr


def test_sample_cli_without_checkpoint_is_a_clear_error(data_dir, tmp_path):
    result = run_main(str(tmp_path / "empty"), data_dir, "runlocal", "--mode=sample")
    assert result.returncode == 2
    assert "no checkpoints" in result.stderr and "Traceback" not in result.stderr


def _error_lines(stderr):
    return [x for x in stderr.splitlines() if x.startswith("vdiff:")]


def test_second_training_on_a_busy_workdir_stops_at_once(data_dir, tmp_path):
    from vdiff.core.workdir import WorkdirLock
    workdir = str(tmp_path / "busy")
    with WorkdirLock(workdir):  # a live run (this test's process) holds the workdir
        result = run_main(workdir, data_dir, "runlocal,steps=2")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    (line,) = _error_lines(result.stderr)
    assert "WorkdirBusyError" in line and f"PID {os.getpid()}" in line and "since" in line
    assert os.listdir(workdir) == []  # no metrics.jsonl, config.json or checkpoints


def test_corrupt_newest_checkpoint_is_skipped_then_set_aside(reference_run, data_dir,
                                                             tmp_path):
    from tests.helpers import load_config
    from vdiff.methods import get_method
    from vdiff.core.checkpoints import restore_ema_params
    from vdiff.train import sharding
    ref_dir, _ = reference_run
    workdir = str(tmp_path / "corrupt")
    shutil.copytree(ref_dir, workdir)
    newest = os.path.join(workdir, "checkpoints", str(REF_STEPS))
    # Every array data file cut in half: orbax's OCDBT store can leave data files the
    # manifest no longer references, so truncating only the largest may not touch the state.
    data = [os.path.join(d, f) for d, _, fs in os.walk(newest) for f in fs
            if os.path.basename(d) == "d" and os.path.getsize(os.path.join(d, f)) > 1024]
    assert data
    for path in data:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)

    # Sampling reads around it and leaves it in place.
    previous = REF_STEPS - 2  # checkpoint_every=2
    config = load_config("vdm_digits", f"runlocal,steps={REF_STEPS}")
    config.data.data_dir = data_dir
    mesh = sharding.make_mesh(config.mesh.shape)
    _, step = restore_ema_params(config, workdir, get_method(config), mesh)
    assert step == previous and os.path.isdir(newest)

    # The trainer resumes from the step before (already complete at steps=previous: nothing
    # to compile), moves the newest aside, and drops the killed run's metrics after it.
    result = run_main(workdir, data_dir, f"runlocal,steps={previous}", *RESUME_FLAGS)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert f"skipping step {REF_STEPS}" in log and "resumed from" in log
    assert f"at step {previous}" in log
    assert checkpoint_steps(workdir) == [previous]
    (bad,) = os.listdir(os.path.join(workdir, "checkpoints_bad"))
    assert bad.startswith(f"{REF_STEPS}-")
    lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [x["step"] for x in lines] == list(range(2, previous + 1, 2))


def test_sample_and_eval_refuse_a_config_that_reshapes_the_run(reference_run, data_dir):
    ref_dir, _ = reference_run
    # The run was trained with `runlocal` and is sampled without it.
    result = run_main(ref_dir, data_dir, f"steps={REF_STEPS}", "--mode=sample")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    (line,) = _error_lines(result.stderr)
    assert "model.channel_mults" in line and "data.resolution" in line
    from tests.helpers import load_config
    from vdiff.errors import ConfigError
    from vdiff.eval.run_eval import evaluate_workdir
    config = load_config("vdm_digits", "runlocal")
    config.model.base_channels = 8
    with pytest.raises(ConfigError, match="model.base_channels"):
        evaluate_workdir(config, ref_dir)


@pytest.mark.slow  # ≈1 min; test_cascade_sr.py covers the conditioning and the train step
def test_cascade_sr_trains_and_super_resolves(data_dir, tmp_path):
    config = os.path.join(REPO, "configs", "vdm_digits_sr.py")
    workdir, out = str(tmp_path / "sr"), str(tmp_path / "sr_out")
    common = [sys.executable, "-m", "vdiff.main", f"--config={config}:runlocal,steps=4",
              f"--workdir={workdir}", f"--config.data.data_dir={data_dir}"]
    train = subprocess.run(common, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stdout + train.stderr
    sample = subprocess.run(common + ["--mode=sample", "--application=super_resolve",
                                      "--sampler=ddim", "--num_steps=3", "--num_samples=2",
                                      f"--output_dir={out}"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert sample.returncode == 0, sample.stdout + sample.stderr
    videos = np.load(os.path.join(out, "samples.npz"))["videos"]
    assert videos.shape == (2, 4, 16, 16, 1)
    info = json.load(open(os.path.join(out, "info.json")))
    assert info["sr_method"] == "cascade" and np.isfinite(info["psnr_db"])
    wrong = subprocess.run(common + ["--mode=sample", "--application=extend"], cwd=REPO,
                           capture_output=True, text=True, timeout=600)
    assert wrong.returncode == 2 and "super-resolution stage" in wrong.stderr


def test_step_flops_counts_convolutions_and_cudnn_attention():
    """The MFU numerator: unoptimized-module FLOPs (≈ the optimized count on CPU, where XLA
    runs every op itself) plus cuDNN fused-attention calls parsed from optimized HLO."""
    import jax
    import jax.numpy as jnp

    from vdiff.train import metrics as metrics_lib

    def f(x, w):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.tanh(y).sum()

    x, w = jnp.ones((2, 16, 16, 8)), jnp.ones((3, 3, 8, 16))
    lowered = jax.jit(jax.grad(f, argnums=(0, 1))).lower(x, w)
    compiled = lowered.compile()
    conv = 2 * 2 * 16 * 16 * 16 * 3 * 3 * 8  # forward MACs × 2
    counted = metrics_lib.step_flops(lowered, compiled)
    assert 2.5 * conv < counted < 4 * conv  # forward + input and weight gradients
    np.testing.assert_allclose(counted, metrics_lib.compiled_flops(compiled), rtol=0.1)
    # The host-CPU count GPU runs fall back to equals the unoptimized module's own count.
    assert metrics_lib._host_cost_flops(lowered) == lowered.cost_analysis()["flops"]
    # Sharded over 4 devices: the unoptimized module is the global program; per device is ¼.
    mesh = jax.make_mesh((4,), ("d",), devices=jax.devices()[:4],
                         axis_types=(jax.sharding.AxisType.Auto,))
    xs = jax.device_put(jnp.ones((8, 16, 16, 8)), jax.NamedSharding(mesh, jax.P("d")))
    lowered4 = jax.jit(jax.grad(f, argnums=(0, 1))).lower(xs, w)
    per_device = metrics_lib.step_flops(lowered4, lowered4.compile(), 4)
    np.testing.assert_allclose(per_device, 4 * counted / 4, rtol=1e-6)  # batch 8 = 4 × 2
    # Two calls as XLA writes them on a GPU (shapes [B, L, H, D]).
    hlo = ('%a = (bf16[512,2,1024,64]) custom-call(%q, %k, %v), '
           'custom_call_target="__cudnn$fmhaSoftmax", operand_layout_constraints={'
           'bf16[512,1024,2,64]{3,2,1,0}, bf16[512,1024,2,64]{3,2,1,0}, '
           'bf16[512,1024,2,64]{3,2,1,0}}, api_version=API_VERSION_STATUS_RETURNING\n'
           '%b = (bf16[8,4,256,32]) custom-call(%q, %k, %v, %s, %o, %do), '
           'custom_call_target="__cudnn$fmhaSoftmaxBackward", operand_layout_constraints={'
           'bf16[8,256,4,32]{3,2,1,0}, bf16[8,128,4,32]{3,2,1,0}, bf16[8,128,4,32]{3,2,1,0}, '
           'f32[8,4,256]{2,1,0}}\n')
    expected = 4.0 * 512 * 2 * 1024 * 1024 * 64 + 8.0 * 8 * 4 * 256 * 128 * 32
    assert metrics_lib.cudnn_attention_flops(hlo) == expected
