"""Multi-process JAX: decide from the environment whether this process is one of several,
and initialise `jax.distributed` before anything touches a device.

Recognised, in order:
  1. explicit: JAX_COORDINATOR_ADDRESS (host:port), JAX_NUM_PROCESSES, JAX_PROCESS_ID
     [, JAX_LOCAL_DEVICE_IDS="0,1"] — what `launch/gpu_multinode.sh` exports;
  2. torchrun style: MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK;
  3. SLURM under `srun` (SLURM_STEP_ID set, SLURM_NTASKS > 1): JAX's own SLURM detection;
  4. Cloud TPU VM pod slices (TPU_WORKER_HOSTNAMES lists more than one host, or
     `force=True` from `--multiprocess`): JAX's own TPU detection.
One process (none of the above) needs no initialisation.
On CPU, cross-process collectives go through gloo (JAX's CPU default has none).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Mapping

import jax

from vdiff.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
    """How to call `jax.distributed.initialize` (None fields: let JAX detect them)."""

    source: str
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None


def _int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise ConfigError(f"environment variable {key}={env[key]!r} must be an integer") from None


def detect(env: Mapping[str, str] | None = None, *, force: bool = False) -> ProcessSpec | None:
    """The multi-process setup the environment describes, or None for a single process."""
    env = os.environ if env is None else env
    explicit = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
    given = [k for k in explicit if env.get(k)]
    if given:
        missing = [k for k in explicit if not env.get(k)]
        if missing:
            raise ConfigError(f"{', '.join(given)} set but {', '.join(missing)} missing: a "
                              "multi-process run needs all three (see launch/README.md)")
        ids = env.get("JAX_LOCAL_DEVICE_IDS")
        spec = ProcessSpec("JAX_* variables", env["JAX_COORDINATOR_ADDRESS"],
                           _int(env, "JAX_NUM_PROCESSES"), _int(env, "JAX_PROCESS_ID"),
                           tuple(int(i) for i in ids.split(",")) if ids else None)
    elif all(env.get(k) for k in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")):
        spec = ProcessSpec("MASTER_ADDR/WORLD_SIZE/RANK", f"{env['MASTER_ADDR']}:"
                           f"{env['MASTER_PORT']}", _int(env, "WORLD_SIZE"), _int(env, "RANK"))
    elif env.get("SLURM_STEP_ID") is not None and int(env.get("SLURM_NTASKS", "1")) > 1:
        # JAX's SLURM detection gives each process only GPU SLURM_LOCALID; a one-task-per-node
        # job names all of the node's GPUs in JAX_LOCAL_DEVICE_IDS (launch/slurm.sbatch).
        ids = env.get("JAX_LOCAL_DEVICE_IDS")
        return ProcessSpec("SLURM", local_device_ids=tuple(int(i) for i in ids.split(","))
                           if ids else None)
    elif len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1 or force:
        return ProcessSpec("TPU pod / auto-detect")
    else:
        return None
    if spec.num_processes < 1 or not 0 <= spec.process_id < spec.num_processes:
        raise ConfigError(f"process id {spec.process_id} is not in [0, {spec.num_processes}) "
                          f"({spec.source})")
    return None if spec.num_processes == 1 else spec


def initialize(env: Mapping[str, str] | None = None, *, force: bool = False) -> bool:
    """Calls `jax.distributed.initialize` when the environment asks for several processes.

    Returns whether it did. Must run before the first device use.
    """
    spec = detect(env, force=force)
    if spec is None:
        return False
    # Only the CPU client reads this; accelerators keep their own (NCCL, ICI) collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=spec.coordinator_address, num_processes=spec.num_processes,
        process_id=spec.process_id, local_device_ids=spec.local_device_ids)
    logging.info("jax.distributed initialised from %s: process %d of %d, %d local devices",
                 spec.source, jax.process_index(), jax.process_count(),
                 jax.local_device_count())
    return True


_barrier_uses: dict[str, int] = {}


def barrier(name: str, *, timeout_s: float = 900.0) -> None:
    """Waits until every process reaches `barrier(name)`; nothing to do for one process.

    It goes through the coordination service, not a device collective, on purpose: the first
    CPU (gloo) collective over a set of devices sets up its connections and gives up when a
    peer is 30 s late (later ones wait: 45 s measured), and processes that compile the same
    program on a loaded host can finish that far apart. So call it between the compile and
    the first run of the first program with collectives (the train step). JAX has no public
    barrier of this kind, hence the private client (the one Orbax's multihost barriers use).
    """
    if jax.process_count() == 1:
        return
    from jax._src import distributed as jax_distributed

    count = _barrier_uses[name] = _barrier_uses.get(name, -1) + 1  # ids must not repeat
    jax_distributed.global_state.client.wait_at_barrier(f"vdiff/{name}/{count}",
                                                        timeout_in_ms=int(timeout_s * 1000))
