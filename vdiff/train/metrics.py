"""Metric aggregation over a logging window and writers (TensorBoard via tensorboardX + JSONL).

`clu.metric_writers` is avoided on purpose: it imports TensorFlow, which breaks
multi-GPU NCCL collectives when loaded in the same process (DESIGN.md).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@jax.jit
def _add_metrics(sums: dict[str, jax.Array], step_metrics: dict[str, jax.Array]):
    return jax.tree.map(lambda a, b: a + b.astype(jnp.float32), sums, step_metrics)


class WindowMean:
    """Averages each scalar metric of the train step over the logging window, on device.

    One jitted add per step and one transfer per window. (clu's Average collection,
    used before, ran ~10 eager ops per metric per step: with 15 metrics on a GPU that
    was ~80 ms of host dispatch per step, most of the step time of a small model.)
    `finite` (1 per good step) averages below 1 as soon as one step was not finite.
    """

    def __init__(self):
        self._sums, self.count = None, 0

    def add(self, step_metrics: Mapping[str, jax.Array]) -> None:
        step_metrics = dict(step_metrics)
        if self._sums is None:
            self._sums = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), step_metrics)
        self._sums = _add_metrics(self._sums, step_metrics)
        self.count += 1

    def compute(self) -> dict[str, float]:
        """Window means as Python floats (blocks until the window's steps are done)."""
        if not self.count:
            return {}
        sums = jax.device_get(self._sums)
        return {k: float(np.mean(v)) / self.count for k, v in sums.items()}


def drop_records_after(path: str, step: int) -> None:
    """Rewrites a JSONL file without its records of steps > `step` (and a torn last line),
    atomically: a temporary file renamed over it."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            if int(json.loads(line)["step"]) <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
        except (ValueError, KeyError, TypeError):
            continue
    if kept == lines:
        return
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)


class MetricWriter:
    """Writes scalars to TensorBoard event files and `metrics.jsonl` (process 0 only)."""

    def __init__(self, workdir: str, *, enabled: bool = True, jsonl_name: str = "metrics.jsonl",
                 prefix: str = "", resume_step: int | None = None):
        """`resume_step`: the step the run (re)starts from. Records of later steps, written
        by a killed run after its last checkpoint, are dropped (JSONL) or hidden
        (TensorBoard's purge_step), so a resumed run has each step once."""
        self.prefix = prefix
        self.enabled = enabled
        self._tb = None
        self._jsonl = None
        if enabled:
            from tensorboardX import SummaryWriter  # lazy: only the writing process needs it
            os.makedirs(workdir, exist_ok=True)
            path = os.path.join(workdir, jsonl_name)
            if resume_step is not None:
                drop_records_after(path, resume_step)
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"),
                                     purge_step=None if resume_step is None else resume_step + 1)
            self._jsonl = open(path, "a", buffering=1)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        values = {k: float(np.asarray(v)) for k, v in scalars.items()}
        for k, v in values.items():
            self._tb.add_scalar(self.prefix + k, v, step)
        self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **values}) + "\n")

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()
            self._jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()


# Dense bf16 peak FLOP/s per chip, for MFU. Unknown devices (e.g. CPU) report no MFU.
PEAK_FLOPS = {
    "H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12,
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
    "TPU v5": 459e12, "TPU v6 lite": 918e12, "TPU v6e": 918e12,
}


def peak_flops_per_device(device: Any | None = None) -> float | None:
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        return None
    kind = device.device_kind
    for name, flops in sorted(PEAK_FLOPS.items(), key=lambda kv: -len(kv[0])):
        if name.lower() in kind.lower():
            return flops
    return None


def _cost_flops(analysis: Any) -> float | None:
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


def compiled_flops(compiled: Any) -> float | None:
    """FLOPs per call from XLA's cost analysis of the *optimized* module (None when
    unavailable). On GPUs this misses every op XLA hands to cuDNN / cuBLAS (convolutions,
    GEMMs, fused attention); use `step_flops` for MFU."""
    try:
        return _cost_flops(compiled.cost_analysis())
    except Exception:  # noqa: BLE001 - some backends don't implement it
        return None


_FMHA = re.compile(r'custom_call_target="__cudnn\$fmha(\w*)".*?operand_layout_constraints='
                   r'\{\w+\[(\d+),(\d+),(\d+),(\d+)\](?:\{[^}]*\})?, \w+\[(\d+),(\d+),(\d+),(\d+)\]')


def cudnn_attention_flops(hlo_text: str) -> float:
    """Model FLOPs of cuDNN fused attention calls in optimized HLO text.

    q [B, L, H, D], k [B, S, H, D]: forward QKᵀ and PV = 4·B·H·L·S·D; a backward call
    (dQ, dK, dV, dP) counts twice that, the usual 3× forward for a training step.
    """
    total = 0.0
    for m in _FMHA.finditer(hlo_text):
        kind = m.group(1)
        b, lq, h, d = (int(x) for x in m.group(2, 3, 4, 5))
        s = int(m.group(7))
        total += (8.0 if "Backward" in kind else 4.0) * b * h * lq * s * d
    return total


def _host_cost_flops(lowered: Any) -> float | None:
    """XLA's cost analysis of the unoptimized module, run by the CPU client. On GPU,
    `Lowered.cost_analysis()` is unavailable (PJRT plugin) and the compiled module's count
    misses every op handed to cuDNN/cuBLAS: it reported 1.7 of 42.7 TFLOP for the VDM step."""
    try:
        from jax._src.lib import _jax  # private, hence the broad fallback below

        computation = lowered.compiler_ir("hlo")
        module = computation.as_hlo_module() if hasattr(computation, "as_hlo_module") \
            else computation
        cpu = jax.local_devices(backend="cpu")[0].client
        return _cost_flops(_jax.hlo_module_cost_analysis(cpu, module))
    except Exception:  # noqa: BLE001
        return None


def step_flops(lowered: Any, compiled: Any, num_devices: int = 1) -> float | None:
    """Model FLOPs per call *per device*, independent of which library runs each op: XLA's
    cost analysis of the *unoptimized* module (convolutions and dots still visible there;
    it is the global, pre-partitioning program, hence the division by `num_devices`) plus
    the cuDNN attention calls, which are opaque custom calls from lowering on (parsed from
    the partitioned, per-device module)."""
    try:
        flops = _cost_flops(lowered.cost_analysis())
    except Exception:  # noqa: BLE001
        flops = None
    if flops is None:  # GPU plugins have no pre-compile cost analysis: count on the host CPU
        flops = _host_cost_flops(lowered)
    if flops is None:
        return compiled_flops(compiled)
    try:
        text = compiled.as_text()
    except Exception:  # noqa: BLE001
        text = ""
    return flops / max(int(num_devices), 1) + cudnn_attention_flops(text or "")
