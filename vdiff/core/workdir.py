"""A workdir is the unit of a run: a lock while a process trains in it, and its `config.json`.

Lock: WORKDIR/.lock, created with O_EXCL, holding JSON {host, pid, since}, and flock'ed for as
long as the trainer runs. A second trainer stops at once with one line naming the holder. A
lock whose holder is gone (same host, no flock held, PID dead or reused) is taken over with a
warning; one from another host is only ever reported (its PID cannot be checked here).
In a multi-process run process 0 holds it and tells the others whether they may go on.

Config: `--mode=sample` / `--mode=eval` start from the run's own config.json. Each key of the
given --config is handled by the rule of its longest prefix in `KEY_RULES`:

    rule    keys                                              a different value in --config
    match   method, model.*, data.*, diffusion.*, sr.*,       is an error naming the keys
            sinfusion.*, pvdm.*, dreampose.* (shape the       (exit 2): the checkpoint's
            parameters or the data the model was fit to)      parameters would not fit it
    given   sample.*, evals.*, apps.*, mesh.*, sharding.*,    wins: it only changes how
            seed; model.dtype / *attention_impl / remat /     samples and evaluations are
            fused_norm;                                       computed or where data is read
            data.data_dir / read_threads / worker_count;
            the sinfusion/pvdm/dreampose sampling keys;
            pvdm.autoencoder_workdir (a path, checked by PVDM)
    run     everything else: train.*, training-only loss,     is ignored: the run's value is
            augmentation and curriculum keys                  used (the optimizer state's shape)

Keys present on one side only (configs written by older code) are not compared.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import ml_collections

from vdiff.errors import ConfigError, WorkdirBusyError

try:
    import fcntl
except ImportError:  # Windows: the O_EXCL file and the PID check alone
    fcntl = None

LOCK_NAME = ".lock"
CONFIG_NAME = "config.json"

KEY_RULES: dict[str, str] = {
    "method": "match", "model": "match", "data": "match", "diffusion": "match", "sr": "match",
    "sinfusion": "match", "pvdm": "match", "dreampose": "match",
    "sample": "given", "evals": "given", "apps": "given", "mesh": "given", "sharding": "given",
    "seed": "given",
    # numerics and placement, not shapes: a run trained on a GPU samples on a CPU
    "model.dtype": "given", "model.remat": "given", "model.attention_impl": "given",
    "model.spatial_attention_impl": "given", "model.temporal_attention_impl": "given",
    "model.fused_norm": "given",
    # where and how the data is read, not what it is
    "data.data_dir": "given", "data.read_threads": "given", "data.worker_count": "given",
    "data.build_if_missing": "given",
    "sinfusion.sample_num_frames": "given", "sinfusion.correction_level": "given",
    "sinfusion.eta": "given", "pvdm.sample_num_frames": "given",
    "pvdm.sample_labels": "given", "pvdm.autoencoder_workdir": "given",
    "dreampose.s_image": "given", "dreampose.s_pose": "given",
    # training only: losses, augmentation, curricula
    "train": "run", "model.dropout": "run", "diffusion.cond_drop_prob": "run",
    "diffusion.loss_space": "run", "diffusion.weighting": "run", "data.random_flip": "run",
    "data.crop_fraction": "run", "data.temporal_crop": "run",
    "data.num_images_per_video": "run", "data.joint_images_from": "run",
    "sinfusion.role_steps": "run",
    "sinfusion.curriculum_stage_steps": "run", "pvdm.l1_weight": "run",
    "pvdm.lpips_weight": "run", "pvdm.lpips_frames": "run", "pvdm.gan_start_step": "run",
    "pvdm.gan_weight": "run", "pvdm.gan_weight_mode": "run", "pvdm.gan_ramp_steps": "run",
    "pvdm.adaptive_max_weight": "run", "pvdm.disc_lr": "run", "pvdm.disc_b1": "run",
    "pvdm.disc_b2": "run", "pvdm.cond_prob": "run", "pvdm.cache_latents": "run",
    "dreampose.p_image": "run", "dreampose.p_pose": "run", "dreampose.p_both": "run",
    "dreampose.kl_weight": "run", "dreampose.l1_weight": "run", "dreampose.init_from": "run",
}


# ---------------------------------------------------------------------------------- lock


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused PID."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _process_alive(pid: int, start: int | None) -> bool:
    """Whether the lock holder `pid` (started at `start`, if known) still runs on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    except (OverflowError, ValueError):
        return False
    now = _start_time(pid)
    return start is None or now is None or now == start


def _try_flock(fd: int) -> bool | None:
    """True: we hold it; False: a live process does; None: this filesystem has no flock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK / EOPNOTSUPP on some network filesystems
        return None
    return True


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "null")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


class WorkdirLock:
    """WORKDIR/.lock held by this process from `acquire` to `release` (see the module doc)."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_NAME)
        self.host = socket.gethostname()
        self._fd: int | None = None

    def _describe(self, info: dict[str, Any]) -> str:
        return (f"host {info.get('host', '?')}, PID {info.get('pid', '?')}, since "
                f"{info.get('since', '?')}")

    def _write(self, fd: int) -> None:
        data = json.dumps({"host": self.host, "pid": os.getpid(), "since": _now(),
                           "start": _start_time(os.getpid())}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)

    def _busy(self, info: dict[str, Any], hint: str = "") -> WorkdirBusyError:
        return WorkdirBusyError(
            f"workdir {self.workdir} is in use by another run ({self._describe(info)}): stop it "
            f"or pass another --workdir{hint}")

    def acquire(self) -> None:
        os.makedirs(self.workdir, exist_ok=True)
        for _ in range(5):  # retried only when the file changes under us
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if self._take_over_if_stale():
                    return
                continue
            if _try_flock(fd) is False:  # a racer flocked our fresh file first: it won
                info = _read_holder(fd)
                os.close(fd)
                raise self._busy(info)
            self._write(fd)
            self._fd = fd
            return
        raise WorkdirBusyError(f"could not lock {self.path}: it keeps changing (another run "
                               f"is starting there?)")

    def _take_over_if_stale(self) -> bool:
        """Takes over the existing lock file if its holder is gone; raises if it is alive;
        False when the file vanished or was replaced meanwhile (the caller retries)."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            locked = _try_flock(fd)
            info = _read_holder(fd)
            try:
                same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same_file = False
            if locked is False:
                raise self._busy(info)
            if not same_file:
                os.close(fd)
                return False
            if info.get("host") not in (None, self.host):  # its PID means nothing here
                raise self._busy(info, f"; if that run is no longer running, delete {self.path}")
            pid = info.get("pid")
            if isinstance(pid, int):
                if _process_alive(pid, info.get("start")):
                    raise self._busy(info)
            elif locked is None and time.time() - os.fstat(fd).st_mtime < 60:
                raise self._busy(info)  # unreadable and new: a run may be writing it now
            logging.warning("workdir %s: taking over the lock of a run that is no longer "
                            "running (%s)", self.workdir, self._describe(info))
            self._write(fd)
            self._fd = fd
            return True
        except BaseException:
            if self._fd != fd:
                os.close(fd)
            raise

    def release(self) -> None:
        """Removes the lock file if it is still ours, then drops the flock."""
        if self._fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WorkdirLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[WorkdirLock | None]:
    """Holds the workdir lock on process 0; every process raises if process 0 could not
    take it (so the others do not wait forever in the first collective)."""
    import jax

    lock = WorkdirLock(workdir) if jax.process_index() == 0 else None
    error = None
    if lock is not None:
        try:
            lock.acquire()
        except WorkdirBusyError as e:
            error = e
    if jax.process_count() > 1:
        import numpy as np
        from jax.experimental import multihost_utils

        ok = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
        if not ok and error is None:
            error = WorkdirBusyError(f"workdir {workdir} is in use by another run (process 0 "
                                     f"could not lock it; see its log)")
    if error is not None:
        raise error
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


# ------------------------------------------------------------------------------- config


def config_path(workdir: str) -> str:
    return os.path.join(workdir, CONFIG_NAME)


def write_config(workdir: str, config: Any) -> None:
    """Writes WORKDIR/config.json atomically (a killed run never leaves half a file)."""
    path = config_path(workdir)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    os.replace(tmp, path)


def read_config(workdir: str) -> ml_collections.ConfigDict | None:
    """The run's config.json as a ConfigDict, None if the workdir has none. The one reader
    of a workdir's config (sample, eval, PVDM's autoencoder run, DreamPose runs)."""
    path = config_path(workdir)
    if not workdir or not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return ml_collections.ConfigDict(json.load(f))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is unreadable ({type(e).__name__}: {e}); restore it or "
                          f"delete it to use --config as given") from None


def config_of_run(workdir: str) -> ml_collections.ConfigDict:
    """The run's config.json as the config itself (`--mode=sample/eval` without --config):
    JSON lists back to the tuples config files use, locked like a loaded config file."""
    config = read_config(workdir)
    if config is None:
        raise ConfigError(f"{config_path(workdir)} does not exist: pass the run's --config "
                          "(a SinFusion workdir keeps one config per role, so it needs --config)")

    def tuples(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: tuples(v) for k, v in x.items()}
        return tuple(tuples(v) for v in x) if isinstance(x, list) else x

    out = ml_collections.ConfigDict(tuples(config.to_dict()))
    out.lock()
    return out


def key_rule(key: str) -> str:
    """'match', 'given' or 'run' for a dotted key: the rule of its longest prefix."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        rule = KEY_RULES.get(".".join(parts[:n]))
        if rule:
            return rule
    return "run"


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}" if not prefix else f"{prefix}.{k}"))
    return out


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def run_config(given: Any, workdir: str) -> Any:
    """The config to sample or evaluate `workdir` with: its config.json, with the keys of
    `given` that only affect sampling/evaluation (module doc). Raises ConfigError naming
    the keys where `given` differs in something that shapes parameters or data. A workdir
    without config.json (nothing trained yet, or not a run) gets `given` as is."""
    saved_cfg = read_config(workdir)
    if saved_cfg is None:
        return given
    saved = _flat(saved_cfg.to_dict())
    ours = _flat(json.loads(given.to_json_best_effort()))
    common = sorted(k for k in ours.keys() & saved.keys() if ours[k] != saved[k])
    mismatched = [k for k in common if key_rule(k) == "match"]
    if mismatched:
        diffs = ", ".join(f"{k} (run {_short(saved[k])}, given {_short(ours[k])})"
                          for k in mismatched[:6])
        more = f" and {len(mismatched) - 6} more" if len(mismatched) > 6 else ""
        raise ConfigError(
            f"--config differs from the run's {config_path(workdir)} in keys that shape its "
            f"parameters or data: {diffs}{more}; use the config the run was trained with")
    from_run = [k for k in common if key_rule(k) == "run"]
    out = given.copy_and_resolve_references()
    for key in from_run:
        *parents, last = key.split(".")
        node = out
        for p in parents:
            node = node[p]
        with node.ignore_type():
            node[last] = saved[key]
    if from_run:
        logging.info("using the run's %s from %s (training-only keys)", ", ".join(from_run),
                     config_path(workdir))
    given_keys = [k for k in common if key_rule(k) == "given"]
    if given_keys:
        logging.info("--config overrides the run's %s", ", ".join(given_keys))
    out.lock()
    return out
