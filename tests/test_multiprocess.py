"""Multi-process JAX on loopback: 2 processes × 4 CPU devices (gloo collectives) must
train exactly like one process with 8 devices, through a checkpoint save and restore;
and a checkpoint written on one mesh restores onto another."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from vdiff import distributed
from vdiff.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/vdm_digits.py:runlocal"
FLAGS = ["--config.data.num_images_per_video=0", "--config.train.log_every=1",
         "--config.train.checkpoint_every=2", "--config.mesh.shape=(2,4,1)",
         "--config.train.async_checkpoints=False", "--config.sample.num_samples=0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices: int, **extra: str) -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(key, None) if key not in extra else None
    return env


def _train(workdir: str, steps: int, *, processes: int) -> None:
    cmd = [sys.executable, "-m", "vdiff.main", f"--config={CONFIG},steps={steps}",
           f"--workdir={workdir}", *FLAGS]
    port = _free_port()
    procs = []
    for p in range(processes):
        extra = {} if processes == 1 else dict(
            JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES=str(processes),
            JAX_PROCESS_ID=str(p))
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=_env(8 // processes, **extra),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outs = [proc.communicate(timeout=600)[0] for proc in procs]
    if any(proc.returncode for proc in procs):  # every process's story: one may explain another
        pytest.fail("\n\n".join(f"process {p} exited {proc.returncode}:\n{out[-3000:]}"
                                  for p, (proc, out) in enumerate(zip(procs, outs))))
    return outs


def _losses(workdir: str) -> dict[int, float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return {m["step"]: m["loss"] for m in map(json.loads, f) if "loss" in m}


@pytest.mark.alone  # gloo's connection setup times out when a peer is 30 s late
def test_two_processes_train_like_one_process_through_a_checkpoint(tmp_path):
    from vdiff.train.checkpoint import load_raw

    two, one = str(tmp_path / "two"), str(tmp_path / "one")
    _train(two, 2, processes=2)             # writes the step-2 checkpoint collectively
    outs = _train(two, 4, processes=2)      # restores it collectively, trains to step 4
    assert "resumed from" in outs[0] and "process 0 of 2" in outs[0]
    assert "process 1 of 2" in outs[1] and "step 4/4" not in outs[1]  # only process 0 logs
    _train(one, 4, processes=1)

    losses_two, losses_one = _losses(two), _losses(one)
    assert sorted(losses_one) == sorted(losses_two) == [1, 2, 3, 4]
    np.testing.assert_allclose([losses_two[s] for s in range(1, 5)],
                               [losses_one[s] for s in range(1, 5)], rtol=2e-5)
    step_two, state_two, _ = load_raw(os.path.join(two, "checkpoints"))
    step_one, state_one, _ = load_raw(os.path.join(one, "checkpoints"))
    assert step_two == step_one == 4
    atol = _adam_noise_atol(state_one, one, steps=4)
    jax.tree.map(lambda a, b, tol: np.testing.assert_allclose(a, b, rtol=1e-4, atol=tol),
                 state_two["params"], state_one["params"], atol)


def _adam_noise_atol(state, workdir: str, *, steps: int, eps: float = 1e-8,
                     b2: float = 0.999) -> dict:
    """Per-leaf absolute tolerance for comparing two runs' parameters: 1e-6, except for
    leaves whose gradient RMS √v̂ (Adam's bias-corrected second moment) is below Adam's ε.

    Upstream of the zero-initialised output conv, gradients are ~1e-11 in the first steps,
    the size of the rounding differences between 2×4 and 1×8 device reductions; Adam's
    update lr·m̂/(√v̂ + ε) turns that noise into parameter differences of up to
    Σ_t lr_t · √v̂ / ε per step sum (1.7e-6 measured for two such biases), so those leaves
    get 1e-6 + 2 Σ_t lr_t √v̂ / ε. Leaves with real gradients keep 1e-6.
    """
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lr_sum = sum(m["learning_rate"] for m in map(json.loads, f) if "learning_rate" in m)
    nus = [x["nu"] for x in jax.tree.leaves(state["opt_state"],
                                            is_leaf=lambda x: isinstance(x, dict) and "nu" in x)
           if isinstance(x, dict) and "nu" in x]
    assert len(nus) == 1, "expected one Adam state in the optimizer"

    def atol(nu):
        rms = float(np.sqrt(np.max(np.asarray(nu)) / (1 - b2 ** steps)))
        return 1e-6 + (2 * lr_sum * rms / eps if rms < eps else 0.0)

    return jax.tree.map(atol, nus[0])


def test_checkpoint_restores_onto_another_mesh(tmp_path):
    """8-device FSDP checkpoint → 4-device data-parallel state, values intact, trainable."""
    from tests.helpers import load_config
    from vdiff.methods import get_method
    from vdiff.train import sharding
    from vdiff.train.checkpoint import Checkpointer
    from vdiff.train.setup import build_train_fns

    config = load_config("vdm_digits", "runlocal")
    config.data.num_images_per_video = 0
    method = get_method(config)

    def fns_on(shape, devices):
        mesh = sharding.make_mesh(shape, devices)
        return mesh, build_train_fns(config, method, mesh)

    mesh8, fns8 = fns_on((1, 8, 1), jax.devices())
    with jax.set_mesh(mesh8), nn.logical_axis_rules(fns8.rules):
        state8 = fns8.init(jax.random.key(0))
    sharded = [x for x in jax.tree.leaves(state8.params)
               if any(s is not None for s in x.sharding.spec)]
    assert sharded, "the FSDP mesh should shard some parameters"
    ckpt = Checkpointer(str(tmp_path / "ckpt"), max_to_keep=1, save_every=1, async_save=False)
    ckpt.save(3, state8, {"iterator": {"next_index": 3}, "worker_count": 0})
    ckpt.close()

    mesh4, fns4 = fns_on((4, 1, 1), jax.devices()[:4])
    ckpt = Checkpointer(str(tmp_path / "ckpt"), max_to_keep=1, save_every=1)
    state4, data_state = ckpt.restore(3, fns4.abstract_state)
    ckpt.close()
    assert data_state["iterator"] == {"next_index": 3}
    for a, b in zip(jax.tree.leaves(state8), jax.tree.leaves(state4)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for leaf in jax.tree.leaves(state4.params):
        assert set(leaf.sharding.device_set) == set(jax.devices()[:4])
        assert leaf.sharding.is_fully_replicated  # data parallel
    batch = {k: np.zeros(v.shape, v.dtype) for k, v in method.example_batch(4).items()}
    with jax.set_mesh(mesh4), nn.logical_axis_rules(fns4.rules):
        new_state, metrics = fns4.step(state4, fns4.global_batch(batch), jax.random.key(1))
    assert int(new_state.step) == int(state8.step) + 1 and np.isfinite(float(metrics["loss"]))


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "2",
      "JAX_LOCAL_DEVICE_IDS": "0,1"},
     distributed.ProcessSpec("JAX_* variables", "h:1", 4, 2, (0, 1))),
    ({"MASTER_ADDR": "h", "MASTER_PORT": "9", "WORLD_SIZE": "2", "RANK": "1"},
     distributed.ProcessSpec("MASTER_ADDR/WORLD_SIZE/RANK", "h:9", 2, 1)),
    ({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "4"}, distributed.ProcessSpec("SLURM")),
    ({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "1"}, None),
    ({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "JAX_LOCAL_DEVICE_IDS": "0,1,2,3"},
     distributed.ProcessSpec("SLURM", local_device_ids=(0, 1, 2, 3))),
    ({"TPU_WORKER_HOSTNAMES": "a,b"}, distributed.ProcessSpec("TPU pod / auto-detect")),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "1", "JAX_PROCESS_ID": "0"},
     None),
])
def test_process_detection(env, expected):
    assert distributed.detect(env) == expected


@pytest.mark.parametrize("env, message", [
    ({"JAX_COORDINATOR_ADDRESS": "h:1"}, "JAX_NUM_PROCESSES, JAX_PROCESS_ID missing"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"},
     "not in [0, 2)"),
    ({"MASTER_ADDR": "h", "MASTER_PORT": "9", "WORLD_SIZE": "two", "RANK": "0"},
     "WORLD_SIZE='two' must be an integer"),
])
def test_process_detection_errors(env, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        distributed.detect(env)
