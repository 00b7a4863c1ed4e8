"""The workdir lock, the run's own config for sample/eval, and metrics.jsonl after a resume."""

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.helpers import load_config
from vdiff.core import workdir as wd
from vdiff.errors import ConfigError, WorkdirBusyError


def _write_lock(workdir, **info):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, wd.LOCK_NAME), "w") as f:
        json.dump({"host": socket.gethostname(), "since": "2026-12-07T10:00:00", **info}, f)


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: its PID names no process now
    return proc.pid


def test_second_lock_is_refused_in_one_line_naming_the_holder(tmp_path):
    with wd.WorkdirLock(str(tmp_path)):
        with pytest.raises(WorkdirBusyError) as e:
            wd.WorkdirLock(str(tmp_path)).acquire()
        message = str(e.value)
        assert "\n" not in message
        assert f"PID {os.getpid()}" in message and socket.gethostname() in message
        assert "since 20" in message
    assert not os.path.exists(tmp_path / wd.LOCK_NAME)  # released
    with wd.WorkdirLock(str(tmp_path)):  # and free again
        pass


def test_lock_is_refused_while_another_process_holds_it(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from vdiff.core.workdir import WorkdirLock; "
         f"WorkdirLock({str(tmp_path)!r}).acquire(); print('locked', flush=True); "
         "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirBusyError, match=f"PID {holder.pid}"):
            wd.WorkdirLock(str(tmp_path)).acquire()
    finally:
        holder.kill()
        holder.wait()
    # Killed without releasing: its file stays, its flock is gone, its PID is dead.
    assert os.path.exists(tmp_path / wd.LOCK_NAME)
    with wd.WorkdirLock(str(tmp_path)):
        assert json.load(open(tmp_path / wd.LOCK_NAME))["pid"] == os.getpid()


def test_stale_lock_of_a_dead_pid_is_taken_over(tmp_path, caplog):
    _write_lock(str(tmp_path), pid=_dead_pid())
    with caplog.at_level("WARNING"), wd.WorkdirLock(str(tmp_path)):
        assert json.load(open(tmp_path / wd.LOCK_NAME))["pid"] == os.getpid()
    assert "taking over the lock" in caplog.text


def test_lock_of_a_live_pid_or_another_host_is_respected(tmp_path):
    _write_lock(str(tmp_path), pid=os.getpid(), start=wd._start_time(os.getpid()))
    with pytest.raises(WorkdirBusyError, match=f"PID {os.getpid()}"):
        wd.WorkdirLock(str(tmp_path)).acquire()
    _write_lock(str(tmp_path), pid=_dead_pid(), host="elsewhere")
    with pytest.raises(WorkdirBusyError, match="host elsewhere.*delete"):
        wd.WorkdirLock(str(tmp_path)).acquire()
    # A reused PID: alive, but started at another time than the holder did.
    _write_lock(str(tmp_path), pid=os.getpid(), start=-1)
    with wd.WorkdirLock(str(tmp_path)):
        pass


def _saved_run(tmp_path, config):
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    wd.write_config(workdir, config)
    return workdir


def test_sample_config_differing_in_model_keys_is_one_line_error(tmp_path):
    run = load_config("vdm_digits")
    workdir = _saved_run(tmp_path, run)
    with pytest.raises(ConfigError) as e:
        wd.run_config(load_config("vdm_digits", "runlocal"), workdir)  # runlocal vs the saved run
    message = str(e.value)
    assert "\n" not in message and "model.channel_mults" in message
    assert "data.resolution" in message and "train." not in message


def test_sampling_keys_override_and_training_keys_come_from_the_run(tmp_path):
    run = load_config("vdm_digits")
    workdir = _saved_run(tmp_path, run)
    given = load_config("vdm_digits")
    given.sample.num_steps = 3
    given.model.dtype = "float32"
    given.data.data_dir = "/elsewhere"
    given.train.optimizer_never_existed = 1  # a key the run's config lacks: not compared
    given.train.lr = 0.5
    out = wd.run_config(given, workdir)
    assert out.sample.num_steps == 3 and out.data.data_dir == "/elsewhere"
    assert out.train.lr == run.train.lr
    assert out.model.channel_mults == run.model.channel_mults  # still a tuple
    assert isinstance(out.model.channel_mults, tuple)
    assert wd.key_rule("model.base_channels") == "match"
    assert wd.key_rule("evals.fvd.num_videos") == "given"
    assert wd.key_rule("train.lr") == "run"
    # A workdir without config.json (nothing trained yet): the config as given.
    assert wd.run_config(given, str(tmp_path)) is given


def test_unreadable_config_json_is_a_config_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        wd.read_config(str(tmp_path))


def test_metrics_jsonl_keeps_only_steps_up_to_the_resumed_one(tmp_path):
    from vdiff.train.metrics import MetricWriter

    path = tmp_path / "metrics.jsonl"
    records = [json.dumps({"step": s, "loss": 1.0}) for s in (2, 4, 6, 8)]
    path.write_text("\n".join(records) + '\n{"step": 10, "lo')  # torn by SIGKILL
    writer = MetricWriter(str(tmp_path), resume_step=4)
    writer.write_scalars(6, {"loss": 0.5})
    writer.close()
    steps = [json.loads(x)["step"] for x in path.read_text().splitlines()]
    assert steps == [2, 4, 6]


def _truncate_largest_file(directory):
    files = [os.path.join(d, f) for d, _, fs in os.walk(directory) for f in fs]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
        f.truncate(os.path.getsize(largest) // 2)


def test_restore_walks_back_past_a_corrupt_checkpoint(tmp_path, caplog):
    import jax
    import numpy as np

    from vdiff.errors import CheckpointRestoreError
    from vdiff.train.checkpoint import Checkpointer

    directory = str(tmp_path / "checkpoints")
    ckpt = Checkpointer(directory, max_to_keep=5, save_every=1, async_save=False)
    for step in (1, 2):
        w = np.random.default_rng(step).normal(size=(256, 64)).astype(np.float32)
        w[0, 0] = step  # random: incompressible, so the array is the largest file
        ckpt.save(step, {"w": w}, {"pos": step})
    ckpt.close()
    abstract = {"w": jax.ShapeDtypeStruct((256, 64), np.float32)}
    _truncate_largest_file(os.path.join(directory, "2"))

    reader = Checkpointer(directory, max_to_keep=5, save_every=0, read_only=True)
    with caplog.at_level("WARNING"):
        step, state, data = reader.restore_newest(abstract, set_aside=False)
    assert (step, float(state["w"][0, 0]), data) == (1, 1.0, {"pos": 1})
    assert "skipping step 2" in caplog.text and os.path.isdir(os.path.join(directory, "2"))

    trainer_ckpt = Checkpointer(directory, max_to_keep=5, save_every=1, async_save=False)
    assert trainer_ckpt.restore_newest(abstract, set_aside=True)[0] == 1
    assert trainer_ckpt.all_steps() == [1]
    (bad,) = os.listdir(str(tmp_path / "checkpoints_bad"))
    assert bad.startswith("2-")

    # None restores (here: a config that does not fit): one error, nothing moved.
    wrong = {"v": jax.ShapeDtypeStruct((256, 64), np.float32)}
    with pytest.raises(CheckpointRestoreError, match="none of the 1 checkpoint"):
        trainer_ckpt.restore_newest(wrong, set_aside=True)
    assert trainer_ckpt.all_steps() == [1]
    trainer_ckpt.close()
