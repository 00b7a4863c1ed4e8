"""SIGTERM during `python -m vdiff.main` training: the run checkpoints the step it reached
and the same command resumes it (kept apart from test_train_loop.py so the two files can
run on different test workers)."""

import os
import signal
import time

from tests.test_train_loop import checkpoint_steps, run_main, start_main


def test_sigterm_saves_then_resume_completes(data_dir, tmp_path):
    workdir = str(tmp_path / "term")
    flags = ("--config.train.checkpoint_every=1000", "--config.train.log_every=1",
             "--config.sample.num_samples=0")  # the final samples are not the point
    proc = start_main(workdir, data_dir, "runlocal,steps=400", *flags)
    deadline = time.time() + 300
    while time.time() < deadline and not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "stopped at step" in out
    steps = checkpoint_steps(workdir)
    assert len(steps) == 1 and 0 < steps[0] < 400
    result = run_main(workdir, data_dir, f"runlocal,steps={steps[0] + 2}", *flags)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resumed from" in result.stderr + result.stdout
    assert checkpoint_steps(workdir)[-1] == steps[0] + 2


def test_sigterm_while_fetching_metrics_still_saves(data_dir, tmp_path, monkeypatch):
    """The signal lands after the step decided not to save (while its metrics are fetched
    from the device): the stop must still write this step's checkpoint."""
    from tests.helpers import load_config
    from vdiff.train import metrics as metrics_lib, trainer
    compute = metrics_lib.WindowMean.compute
    calls = []

    def compute_then_signal(self):
        calls.append(1)
        if len(calls) == 2:  # step 2's log, checkpoint_every=1000: no save was planned
            os.kill(os.getpid(), signal.SIGTERM)
        return compute(self)

    monkeypatch.setattr(metrics_lib.WindowMean, "compute", compute_then_signal)
    config = load_config("vdm_digits", "runlocal")
    config.data.data_dir = data_dir
    config.train.num_steps, config.train.log_every, config.train.checkpoint_every = 50, 1, 1000
    config.sample.num_samples = 0
    workdir = str(tmp_path / "race")
    trainer.train_and_evaluate(config, workdir)
    assert checkpoint_steps(workdir) == [2]
