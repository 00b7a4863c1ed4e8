"""launch/: the printed commands of every launcher's --dry-run, its errors, and (with fake
gcloud / srun / python on PATH) that a real run executes exactly what the dry run prints.

Pure shell, no cloud and no scheduler: each script runs under bash with a minimal
environment (PATH, HOME and the variables under test).
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO

LAUNCH = os.path.join(REPO, "launch")
TPU = {"TPU_NAME": "vdiff-v4", "ZONE": "us-central2-b", "PROJECT": "my-proj",
       "ACCELERATOR_TYPE": "v4-32", "RUNTIME_VERSION": "tpu-ubuntu2204-base"}
GPU = {"COORDINATOR": "10.0.0.1:1234", "NUM_PROCESSES": "2", "NODE_RANK": "1",
       "GPUS_PER_NODE": "4"}
SLURM_JOB = {"SLURM_JOB_ID": "12345", "SLURM_JOB_NODELIST": "gpu[003-004]",
             "SLURM_NTASKS": "2", "SLURM_GPUS_ON_NODE": "8"}
WORKDIR = "/shared/my run"  # a space: must arrive as one argument

# Records its argv (and the JAX_* environment) as one JSON line in $RECORD, prints nothing.
RECORDER = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["RECORD"], "a") as f:
    f.write(json.dumps({{"argv": [os.path.basename(sys.argv[0])] + sys.argv[1:],
                        "env": {{k: v for k, v in os.environ.items() if k.startswith("JAX_")}}}}) + "\\n")
"""
# A fake srun: drops its own options, runs the task once as rank 1 of the job.
FAKE_SRUN = """#!/usr/bin/env bash
while [[ $1 == --* ]]; do shift; done
SLURM_PROCID=1 exec "$@"
"""


@pytest.fixture
def fake_bin(tmp_path):
    """A PATH folder with recording `gcloud`, `sbatch`, `python3` and a fake `srun`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("gcloud", RECORDER), ("sbatch", RECORDER), ("python3", RECORDER),
                       ("srun", FAKE_SRUN)):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def _sh(script: str, *args: str, env: dict[str, str] | None = None, path_dir=None,
        tmp=None, cwd: str = REPO) -> subprocess.CompletedProcess:
    path = os.environ.get("PATH", "/usr/bin:/bin")
    full_env = {"PATH": f"{path_dir}:{path}" if path_dir else path,
                "HOME": str(tmp) if tmp else "/nonexistent", **(env or {})}
    if tmp is not None:
        full_env.setdefault("RECORD", str(tmp / "record.jsonl"))
    return subprocess.run(["bash", os.path.join(LAUNCH, script), *args], env=full_env,
                          cwd=cwd, capture_output=True, text=True, timeout=30)


def _lines(out: subprocess.CompletedProcess) -> list[list[str]]:
    """The printed commands, each split as a shell would."""
    assert out.returncode == 0, out.stderr
    return [shlex.split(line) for line in out.stdout.splitlines() if line.strip()]


def _flag(argv: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    assert len(values) == 1, (name, argv)
    return values[0]


def _records(tmp) -> list[dict]:
    path = tmp / "record.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


# ---------------------------------------------------------------------------- tpu_pod.sh


def test_tpu_create_direct_and_queued():
    (argv,) = _lines(_sh("tpu_pod.sh", "--dry-run", "create", env=TPU))
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "vdiff-v4"]
    assert _flag(argv, "accelerator-type") == "v4-32"
    assert _flag(argv, "version") == "tpu-ubuntu2204-base"
    assert _flag(argv, "zone") == "us-central2-b" and _flag(argv, "project") == "my-proj"

    (argv,) = _lines(_sh("tpu_pod.sh", "create", "--dry-run",
                         env={**TPU, "QUEUED": "1", "SPOT": "1"}))
    assert argv[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "vdiff-v4"]
    assert _flag(argv, "node-id") == "vdiff-v4"
    assert _flag(argv, "runtime-version") == "tpu-ubuntu2204-base"
    assert _flag(argv, "accelerator-type") == "v4-32" and "--spot" in argv


def test_tpu_setup_copies_to_all_workers_and_installs():
    lines = _lines(_sh("tpu_pod.sh", "--dry-run", "setup", env=TPU))
    stage, scp, ssh = lines
    assert stage[:2] == ["bash", "-c"] and "git ls-files" in stage[2]
    assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
    assert "--recurse" in scp and "--worker=all" in scp and "vdiff-v4:." in scp
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "vdiff-v4"]
    assert "--worker=all" in ssh
    remote = shlex.split(_flag(ssh, "command"))
    assert remote[:2] == ["cd", "vdiff"] and ".[tpu]" in remote and "-e" in remote

    lines = _lines(_sh("tpu_pod.sh", "--dry-run", "setup",
                       env={**TPU, "REPO_URL": "https://example.com/vdiff.git"}))
    assert len(lines) == 2 and all("--worker=all" in argv for argv in lines)
    assert "git clone -q https://example.com/vdiff.git vdiff" in _flag(lines[0], "command")


def test_tpu_run_passes_config_workdir_and_flags_on_every_worker():
    out = _sh("tpu_pod.sh", "--dry-run", "run", "--env=VDIFF_DATA_DIR=/mnt/my data",
              "configs/vdm_ucf.py:runlocal", WORKDIR, "--config.train.batch_size=64", env=TPU)
    (argv,) = _lines(out)
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "vdiff-v4"]
    assert "--worker=all" in argv
    remote = _flag(argv, "command")
    words = shlex.split(remote)
    main = words.index("vdiff.main")
    assert words[main - 3:main] == ["nohup", "python3", "-m"]
    assert words[main + 1:main + 5] == ["--config=configs/vdm_ucf.py:runlocal",
                                        f"--workdir={WORKDIR}", "--multiprocess",
                                        "--config.train.batch_size=64"]
    assert "VDIFF_DATA_DIR=/mnt/my data" in words
    assert '"$log.log"' in remote and "$(hostname)" in remote  # one log file per worker


def test_tpu_run_remote_command_runs_in_a_shell(tmp_path, fake_bin):
    """The --command string itself: starts python in the checkout, writes log and pid files."""
    (argv,) = _lines(_sh("tpu_pod.sh", "--dry-run", "run", "configs/x.py", WORKDIR, "--a=b c",
                         env=TPU))
    home = tmp_path / "home"
    (home / "vdiff").mkdir(parents=True)
    env = {"PATH": f"{fake_bin}:{os.environ['PATH']}", "HOME": str(home),
           "RECORD": str(tmp_path / "record.jsonl")}
    out = subprocess.run(["bash", "-c", _flag(argv, "command")], cwd=home, env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "started on" in out.stdout
    for _ in range(100):  # python runs in the background
        if _records(tmp_path):
            break
        time.sleep(0.05)
    (record,) = _records(tmp_path)
    assert record["argv"] == ["python3", "-m", "vdiff.main", "--config=configs/x.py",
                              f"--workdir={WORKDIR}", "--multiprocess", "--a=b c"]
    logs = sorted(p.suffix for p in (home / "vdiff_logs").iterdir())
    assert logs == [".log", ".pid"]


def test_tpu_logs_stop_and_delete():
    mkdir, scp = _lines(_sh("tpu_pod.sh", "--dry-run", "logs", "out dir", env=TPU))
    assert mkdir == ["mkdir", "-p", "out dir"]
    assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
    assert scp[5:8] == ["--recurse", "vdiff-v4:vdiff_logs", "out dir"] and "--worker=all" in scp
    (stop,) = _lines(_sh("tpu_pod.sh", "--dry-run", "stop", env=TPU))
    assert "--worker=all" in stop and "kill -TERM" in _flag(stop, "command")
    (delete,) = _lines(_sh("tpu_pod.sh", "--dry-run", "delete", env=TPU))
    assert delete[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "vdiff-v4"]
    assert "--quiet" in delete
    (delete,) = _lines(_sh("tpu_pod.sh", "--dry-run", "delete", env={**TPU, "QUEUED": "1"}))
    assert delete[:6] == ["gcloud", "compute", "tpus", "queued-resources", "delete", "vdiff-v4"]
    assert "--force" in delete and "--quiet" in delete


@pytest.mark.parametrize("missing,command", [
    ("TPU_NAME", "run"), ("ZONE", "create"), ("PROJECT", "delete"),
    ("ACCELERATOR_TYPE", "create"), ("RUNTIME_VERSION", "create")])
def test_tpu_missing_variable_is_named(missing, command):
    env = {k: v for k, v in TPU.items() if k != missing}
    args = ("configs/x.py", "w") if command == "run" else ()
    out = _sh("tpu_pod.sh", "--dry-run", command, *args, env=env)
    assert out.returncode != 0 and missing in out.stderr and not out.stdout


def test_tpu_usage_errors():
    out = _sh("tpu_pod.sh", "--dry-run", "run", "configs/x.py", env=TPU)
    assert out.returncode == 2 and "CONFIG WORKDIR" in out.stderr
    out = _sh("tpu_pod.sh", "--dry-run", "launch", env=TPU)
    assert out.returncode == 2 and "unknown command launch" in out.stderr
    out = _sh("tpu_pod.sh", "--dry-run", "create", "--spot", env=TPU)
    assert out.returncode == 2 and "takes no arguments" in out.stderr


def test_tpu_real_run_executes_what_the_dry_run_prints(tmp_path, fake_bin):
    args = ("run", "configs/x.py", WORKDIR, "--config.seed=3")
    (printed,) = _lines(_sh("tpu_pod.sh", "--dry-run", *args, env=TPU))
    assert not _records(tmp_path)  # the dry run called nothing
    out = _sh("tpu_pod.sh", *args, env=TPU, path_dir=fake_bin, tmp=tmp_path)
    assert out.returncode == 0, out.stderr
    (record,) = _records(tmp_path)
    assert record["argv"] == printed


# ------------------------------------------------------------------------ gpu_multinode.sh


def test_gpu_exports_and_command():
    lines = _lines(_sh("gpu_multinode.sh", "--dry-run", "configs/vdm_ucf.py", WORKDIR,
                       "--config.train.batch_size=64", env=GPU))
    exports = dict(argv[1].split("=", 1) for argv in lines if argv[0] == "export")
    assert exports == {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2",
                       "JAX_PROCESS_ID": "1", "JAX_LOCAL_DEVICE_IDS": "0,1,2,3"}
    assert lines[-1] == ["python3", "-m", "vdiff.main", "--config=configs/vdm_ucf.py",
                         f"--workdir={WORKDIR}", "--config.train.batch_size=64"]
    # PROCESS_ID instead of NODE_RANK; without GPUS_PER_NODE all visible GPUs are used.
    env = {k: v for k, v in GPU.items() if k not in ("NODE_RANK", "GPUS_PER_NODE")}
    lines = _lines(_sh("gpu_multinode.sh", "c.py", "w", "--dry-run",
                       env={**env, "PROCESS_ID": "0"}))
    assert ["export", "JAX_PROCESS_ID=0"] in lines
    assert not any("JAX_LOCAL_DEVICE_IDS" in " ".join(argv) for argv in lines)


def test_gpu_real_run_exports_the_variables(tmp_path, fake_bin):
    out = _sh("gpu_multinode.sh", "configs/x.py", WORKDIR, "--a=1", env=GPU, path_dir=fake_bin,
              tmp=tmp_path)
    assert out.returncode == 0, out.stderr
    (record,) = _records(tmp_path)
    assert record["argv"] == ["python3", "-m", "vdiff.main", "--config=configs/x.py",
                              f"--workdir={WORKDIR}", "--a=1"]
    assert record["env"] == {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234",
                             "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1",
                             "JAX_LOCAL_DEVICE_IDS": "0,1,2,3"}


@pytest.mark.parametrize("env,message", [
    ({k: v for k, v in GPU.items() if k != "COORDINATOR"}, "COORDINATOR"),
    ({k: v for k, v in GPU.items() if k != "NUM_PROCESSES"}, "NUM_PROCESSES"),
    ({k: v for k, v in GPU.items() if k != "NODE_RANK"}, "PROCESS_ID (or NODE_RANK)"),
    ({**GPU, "NODE_RANK": "2"}, "must be in [0, 2)"),
    ({**GPU, "COORDINATOR": "10.0.0.1"}, "COORDINATOR must be host:port"),
    ({**GPU, "PROCESS_ID": "0"}, "disagree"),
])
def test_gpu_errors(env, message):
    out = _sh("gpu_multinode.sh", "--dry-run", "c.py", "w", env=env)
    assert out.returncode != 0 and message in out.stderr and not out.stdout


# ------------------------------------------------------------------------------- SLURM


def test_sbatch_header():
    text = open(os.path.join(LAUNCH, "slurm.sbatch")).read()
    header = [line.split()[1] for line in text.splitlines() if line.startswith("#SBATCH")]
    names = {h.split("=")[0] for h in header}
    assert {"--nodes", "--ntasks-per-node", "--gpus-per-node"} <= names
    assert "--ntasks-per-node=1" in header


def test_slurm_submit_command():
    (argv,) = _lines(_sh("slurm_submit.sh", "configs/vdm_ucf.py", WORKDIR, "--nodes", "4",
                         "--gpus-per-node=8", "--partition", "gpu", "--env",
                         "VDIFF_DATA_DIR=/shared/data", "--config.train.batch_size=256",
                         "--dry-run"))
    assert argv[0] == "sbatch"
    assert _flag(argv, "nodes") == "4" and _flag(argv, "ntasks-per-node") == "1"
    assert _flag(argv, "gpus-per-node") == "8" and _flag(argv, "partition") == "gpu"
    assert _flag(argv, "export") == "ALL,GPUS_PER_NODE=8,VDIFF_DATA_DIR=/shared/data"
    script = next(i for i, a in enumerate(argv) if a.endswith("slurm.sbatch"))
    assert argv[script + 1:] == ["configs/vdm_ucf.py", WORKDIR, "--config.train.batch_size=256"]
    # Defaults: nothing but the one-task-per-node layout; the #SBATCH lines decide the rest.
    (argv,) = _lines(_sh("slurm_submit.sh", "--dry-run", "configs/vdm_ucf.py", "w"))
    assert not any(a.startswith(("--nodes=", "--gpus-per-node=")) for a in argv)


@pytest.mark.parametrize("args,message", [
    (("configs/vdm_ucf.py",), "CONFIG and WORKDIR are required"),
    (("configs/vdm_ucf.py", "w", "--nodes", "two"), "--nodes must be a positive integer"),
    (("configs/vdm_ucf.py", "w", "--env", "A=1,2"), "--env needs NAME=VALUE"),
])
def test_slurm_submit_errors(args, message):
    out = _sh("slurm_submit.sh", "--dry-run", *args)
    assert out.returncode == 2 and message in out.stderr


def test_slurm_submit_real_calls_sbatch(tmp_path, fake_bin):
    args = ("configs/vdm_ucf.py", WORKDIR, "--nodes=2")
    (printed,) = _lines(_sh("slurm_submit.sh", "--dry-run", *args))
    out = _sh("slurm_submit.sh", *args, path_dir=fake_bin, tmp=tmp_path)
    assert out.returncode == 0, out.stderr
    assert _records(tmp_path)[0]["argv"] == printed
    out = _sh("slurm_submit.sh", "configs/missing.py", "w", path_dir=fake_bin, tmp=tmp_path)
    assert out.returncode == 2 and "no config file configs/missing.py" in out.stderr


def test_sbatch_script_exports_and_srun():
    lines = _lines(_sh("slurm.sbatch", "--dry-run", "configs/vdm_ucf.py", WORKDIR, "--x=1",
                       env=SLURM_JOB))
    exports = dict(argv[1].split("=", 1) for argv in lines if argv[0] == "export")
    assert exports == {"JAX_COORDINATOR_ADDRESS": f"gpu003:{61440 + 12345 % 4096}",
                       "JAX_NUM_PROCESSES": "2", "JAX_LOCAL_DEVICE_IDS": "0,1,2,3,4,5,6,7"}
    srun = lines[-1]
    assert srun[0] == "srun" and "--ntasks-per-node=1" in srun
    main = srun.index("vdiff.main")
    assert srun[main + 1:] == ["--config=configs/vdm_ucf.py", f"--workdir={WORKDIR}", "--x=1"]
    # One task per GPU instead: JAX's own SLURM detection, no exports.
    lines = _lines(_sh("slurm.sbatch", "--dry-run", "c.py", "w",
                       env={**SLURM_JOB, "VDIFF_SLURM_AUTODETECT": "1"}))
    assert lines == [["srun", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "python3", "-m",
                      "vdiff.main", "--config=c.py", "--workdir=w"]]
    out = _sh("slurm.sbatch", "--dry-run", "c.py", "w")
    assert out.returncode == 2 and "SLURM_JOB_ID" in out.stderr


def test_sbatch_script_real_run_sets_the_rank_per_task(tmp_path, fake_bin):
    out = _sh("slurm.sbatch", "configs/x.py", WORKDIR, env=SLURM_JOB, path_dir=fake_bin,
              tmp=tmp_path)
    assert out.returncode == 0, out.stderr
    (record,) = _records(tmp_path)
    assert record["argv"] == ["python3", "-m", "vdiff.main", "--config=configs/x.py",
                              f"--workdir={WORKDIR}"]
    assert record["env"]["JAX_PROCESS_ID"] == "1"  # the fake srun's SLURM_PROCID
    assert record["env"]["JAX_NUM_PROCESSES"] == "2"
    assert record["env"]["JAX_LOCAL_DEVICE_IDS"] == "0,1,2,3,4,5,6,7"
