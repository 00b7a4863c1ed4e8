"""Profiles the VDM train step (as the trainer builds it) and says where the device time goes.

  python benchmarks/speed/profile_vdm_step.py --out=profile.json --hlo_out=hlo.txt.gz \
      [--variant=NAME:CONFIG_PATH[:key=value,...]] [--ablate=dropout0,gn_bf16,tattn_cudnn]

The default variant is the one of vdm_train_step_h200_*.json that reached the most
videos/s: configs/vdm_ucf.py with base_channels 64, batch 32, 16×64×64, bf16,
cuDNN spatial attention. For it the script

- times the step (median of `--steps` after `--warmup`; the same loop as
  benchmarks/speed/vdm_train_step.py, whose helpers it imports);
- runs `--profile_steps` steps under `jax.profiler.trace`, reads the device plane of
  the `.xplane.pb` with jaxlib's ProfileData (no tensorboard/xprof needed) and sums
  kernel time per HLO op (the `hlo_op` stat of each kernel; the kernel name where
  it is missing);
- joins each op with the optimized HLO (`compiled.as_text()`): opcode or custom-call
  target, output dtype, op_name metadata, fused computation, and puts it in one
  category (convolution, attention_cudnn, attention_xla, dense_gemm, groupnorm_reduction,
  dropout_rng, elementwise, transpose_copy, optimizer_update, other);
- reports the top ops and op groups, time per category, the time in ops with float32
  outputs, conv dtypes / dim_labels / layouts and whether transposes or copies feed or
  follow them, the GPU's idle time in a step, and the FLOPs the step really does:
  XLA's cost_analysis() of the optimized module leaves out custom calls (cuDNN convs,
  cuBLAS GEMMs, cuDNN attention), so those are counted from the HLO shapes (attention
  analytically) and the MFU is computed from the sum.

Run it with XLA_FLAGS=--xla_gpu_enable_command_buffer= for per-op attribution: with
command buffers (CUDA graphs) on, every kernel carries the command buffer as its hlo_op.
`--reanalyze=RESULT.json --reanalyze_hlo=HLO.txt.gz --out=...` re-derives categories and
metrics of a saved run on any machine (no device work).

Each `--ablate` entry is the same variant with one change, timed and profiled with the
category breakdown only (evidence for what bounds the step):
  dropout0     model.dropout=0 (no dropout mask: no RNG kernels, no mask multiply)
  gn_bf16      FrameGroupNorm normalizes in bf16 (statistics stay float32 inside flax)
  tattn_cudnn  temporal attention through cuDNN as well (bias + mask)
  nodrop_gn    dropout0 and gn_bf16 together

Runs on CPU too (`--variant=tiny:configs/vdm_ucf.py:...` with small sizes) to check the
parsing; device numbers only mean something on the GPU.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import glob
import gzip
import json
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, HERE)

import vdm_train_step as vts  # noqa: E402

from vdiff.methods import get_method  # noqa: E402
from vdiff.train import metrics as metrics_lib  # noqa: E402
from vdiff.train import sharding  # noqa: E402
from vdiff.train.setup import build_train_fns  # noqa: E402

DEFAULT_VARIANT = ("dim64_b32_cudnn:configs/vdm_ucf.py:model.base_channels=64,"
                   "train.batch_size=32,data.num_images_per_video=0,"
                   "model.spatial_attention_impl=cudnn")
ABLATIONS = {
    "dropout0": ("model.dropout=0.0", ()),
    "gn_bf16": ("", ("gn_bf16",)),
    "tattn_cudnn": ("model.temporal_attention_impl=cudnn", ()),
    "nodrop_gn": ("model.dropout=0.0", ("gn_bf16",)),
}
CATEGORIES = ("convolution", "attention_cudnn", "attention_xla", "dense_gemm",
              "groupnorm_reduction", "dropout_rng", "elementwise", "transpose_copy",
              "optimizer_update", "other")


# ----------------------------------------------------------------------------- HLO text
class Instr:
    __slots__ = ("name", "type", "opcode", "operands", "attrs", "computation", "is_root")

    def __init__(self, name, type_, opcode, operands, attrs, computation, is_root):
        self.name, self.type, self.opcode = name, type_, opcode
        self.operands, self.attrs = operands, attrs
        self.computation, self.is_root = computation, is_root

    def attr(self, key: str) -> str | None:
        m = re.search(key + r'=("(?:[^"\\]|\\.)*"|[^,\s}]+)', self.attrs)
        if not m:
            return None
        v = m.group(1)
        return v[1:-1] if v.startswith('"') else v

    @property
    def op_name(self) -> str:
        m = re.search(r'op_name="([^"]*)"', self.attrs)
        return m.group(1) if m else ""

    @property
    def called(self) -> list[str]:
        return re.findall(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)", self.attrs)

    @property
    def custom_call_target(self) -> str:
        return self.attr("custom_call_target") or ""


def _split_balanced(s: str, start: int) -> int:
    """Index just past the ')' matching the '(' at s[start]."""
    depth = 0
    for i in range(start, len(s)):
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return i + 1
        elif c == '"':  # skip strings
            j = i + 1
            while j < len(s) and s[j] != '"':
                j += 2 if s[j] == "\\" else 1
            # the for loop cannot jump; strings inside operand lists are rare
    return len(s)


_INSTR = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_COMP = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")


def parse_hlo(text: str) -> tuple[dict[str, Instr], dict[str, list[str]]]:
    """Instructions by name (names are unique in a module) and computations' members."""
    instrs: dict[str, Instr] = {}
    comps: dict[str, list[str]] = collections.defaultdict(list)
    comp = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("HloModule"):
            continue
        if not line.startswith(" ") and line.rstrip().endswith("{"):
            m = _COMP.match(line)
            comp = m.group(2) if m else None
            continue
        if line.startswith("}"):
            comp = None
            continue
        m = _INSTR.match(line)
        if not m or comp is None:
            continue
        is_root, name, rest = bool(m.group(1)), m.group(2), m.group(3)
        if rest.startswith("("):
            end = _split_balanced(rest, 0)
        else:
            end = rest.find(" ")
        type_ = rest[:end].strip()
        rest2 = rest[end:].strip()
        p = rest2.find("(")
        if p < 0:
            continue
        opcode = rest2[:p]
        close = _split_balanced(rest2, p)
        operand_text = rest2[p + 1:close - 1]
        operands = re.findall(r"%([\w.\-]+)", operand_text)
        if not operands and operand_text and opcode not in ("parameter", "constant"):
            # newer printers may drop the '%' sigil: take bare names between commas
            operands = [t.strip().split(" ")[-1] for t in operand_text.split(",")
                        if t.strip() and not t.strip()[0].isdigit()]
        attrs = rest2[close:]
        instrs[name] = Instr(name, type_, opcode, operands, attrs, comp, is_root)
        comps[comp].append(name)
    return instrs, comps


def dtypes_of(type_: str) -> list[str]:
    return re.findall(r"\b(pred|s8|u8|s16|u16|s32|u32|s64|u64|f16|bf16|f32|f64|f8\w*)\[", type_)


def shapes_of(type_: str) -> list[tuple[str, tuple[int, ...], str]]:
    out = []
    for dt, dims, layout in re.findall(r"(\w+)\[([\d,]*)\](\{[^}]*\})?", type_):
        out.append((dt, tuple(int(d) for d in dims.split(",") if d), layout))
    return out


def _main_dtype(type_: str) -> str:
    """dtype of the largest array in an instruction's type."""
    best, size = "", -1
    for dt, dims, _ in shapes_of(type_):
        n = int(np.prod(dims)) if dims else 1
        if n > size:
            best, size = dt, n
    return best


def _attention_core(op_name: str) -> bool:
    """Inside the attention of HeadsAttention (scores, softmax, weighted sum), not its
    qkv/out projections."""
    return ("dot_product_attention" in op_name or "HeadsAttention" in op_name) and not \
        re.search(r"HeadsAttention_\d+/(qkv|out)/", op_name)


class HloIndex:
    def __init__(self, text: str):
        self.instrs, self.comps = parse_hlo(text)
        self.users: dict[str, list[str]] = collections.defaultdict(list)
        for ins in self.instrs.values():
            for o in ins.operands:
                self.users[o].append(ins.name)

    def fused_members(self, ins: Instr, depth: int = 0) -> list[Instr]:
        out = []
        for c in ins.called:
            for n in self.comps.get(c, []):
                sub = self.instrs[n]
                out.append(sub)
                if depth < 2 and sub.opcode in ("fusion", "call"):
                    out.extend(self.fused_members(sub, depth + 1))
        return out

    def root_of(self, ins: Instr) -> Instr:
        for c in ins.called:
            for n in self.comps.get(c, []):
                if self.instrs[n].is_root:
                    return self.instrs[n]
        return ins

    def category(self, name: str) -> tuple[str, str, str]:
        """(category, what: a short description, op_name) for one instruction name."""
        ins = self.instrs.get(name)
        if ins is None:
            return "", "", ""
        members = self.fused_members(ins) if ins.opcode == "fusion" else []
        op_names = [ins.op_name] + [m.op_name for m in members]
        joined = " ".join(op_names)
        opcodes = collections.Counter(m.opcode for m in members)
        target = ins.custom_call_target
        backend = ins.attrs
        op_name = next((o for o in op_names if o), "")
        in_fb = any("forward_backward" in o for o in op_names)
        if not in_fb and any(op_names) and ins.opcode != "custom-call":
            # optimizer/ and ema/ scopes, plus the norms and the finite-check selects
            return "optimizer_update", ins.opcode, op_name
        if ins.opcode == "custom-call":
            t = target.lower()
            if "conv" in t:
                return "convolution", target, op_name
            if "fmha" in t or "sdpa" in t or "attention" in t:
                return "attention_cudnn", target, op_name
            if "gemm" in t or "matmul" in t or "cublas" in t:
                if _attention_core(ins.op_name):
                    return "attention_xla", target, op_name
                return "dense_gemm", target, op_name
            return "other", target, op_name
        kind = ins.attr("kind") or ""
        if ins.opcode == "fusion" and ("__cudnn$fusion" in backend or "cudnn" in backend.lower()
                                       and kind == "kCustom"):
            if opcodes.get("convolution"):
                return "convolution", "cudnn fusion (conv)", op_name
            if "dot_product_attention" in joined:
                return "attention_cudnn", "cudnn fusion", op_name
            return "dense_gemm", "cudnn fusion (dot)", op_name
        if opcodes.get("convolution") or ins.opcode == "convolution":
            return "convolution", ins.opcode, op_name
        if opcodes.get("dot") or ins.opcode == "dot":
            what = "triton/xla gemm fusion" if kind == "kCustom" else ins.opcode
            dots = [m for m in members if m.opcode == "dot"] or [ins]
            if any(_attention_core(d.op_name) for d in dots):
                return "attention_xla", what, op_name
            return "dense_gemm", what, op_name
        root = self.root_of(ins) if ins.opcode == "fusion" else ins
        if ins.opcode in ("copy", "transpose", "copy-start", "copy-done") or \
                root.opcode in ("copy", "transpose") or "transpose" in ins.name:
            return "transpose_copy", f"{ins.opcode}->{root.opcode}", op_name
        if any(_attention_core(o) for o in op_names):
            return "attention_xla", ins.opcode + (f" ({kind})" if kind else ""), op_name
        if re.search(r"Dropout|threefry|random_bits|rng_bit_generator", joined) or \
                opcodes.get("rng-bit-generator"):
            return "dropout_rng", ins.opcode, op_name
        if "GroupNorm" in joined or opcodes.get("reduce") or ins.opcode in ("reduce", "reduce-window"):
            return "groupnorm_reduction", ins.opcode + (f" ({kind})" if kind else ""), op_name
        if ins.opcode == "fusion" or ins.opcode in (
                "add", "multiply", "convert", "select", "broadcast", "concatenate", "slice",
                "dynamic-slice", "dynamic-update-slice", "pad", "reshape", "bitcast"):
            return "elementwise", ins.opcode + (f" ({kind})" if kind else ""), op_name
        return "other", ins.opcode, op_name

    # -- convolutions ------------------------------------------------------------------
    def _producer_desc(self, name: str, hops: int = 0) -> str:
        ins = self.instrs.get(name)
        if ins is None:
            return "?"
        if ins.opcode in ("get-tuple-element", "bitcast") and ins.operands and hops < 3:
            return self._producer_desc(ins.operands[0], hops + 1)
        if ins.opcode == "fusion":
            root = self.root_of(ins)
            mem = collections.Counter(m.opcode for m in self.fused_members(ins))
            tag = "transpose" if (root.opcode == "transpose" or mem.get("transpose")) else (
                "copy" if root.opcode == "copy" else root.opcode)
            return f"fusion[{tag}]"
        return ins.opcode

    def conv_report(self) -> dict:
        convs = [i for i in self.instrs.values()
                 if (i.opcode == "custom-call" and "conv" in i.custom_call_target.lower())
                 or i.opcode == "convolution"
                 or (i.opcode == "fusion" and "__cudnn$fusion" in i.attrs
                     and any(m.opcode == "convolution" for m in self.fused_members(i)))]
        by_kind = collections.Counter()
        labels = collections.Counter()
        layouts = collections.Counter()
        producers = collections.Counter()
        consumers = collections.Counter()
        fed_by_transpose = 0
        feeds_transpose = 0
        rows = {}
        for c in convs:
            in_dts = [_main_dtype(self.instrs[o].type) for o in c.operands if o in self.instrs]
            out_dt = _main_dtype(c.type)
            target = c.custom_call_target or c.opcode
            by_kind[f"{target} in={'/'.join(in_dts)} out={out_dt}"] += 1
            labels[c.attr("dim_labels") or "?"] += 1
            for o in c.operands:
                if o in self.instrs:
                    for dt, dims, layout in shapes_of(self.instrs[o].type)[:1]:
                        if len(dims) >= 4:
                            layouts[f"{dt} rank{len(dims)} {layout}"] += 1
            prods = [self._producer_desc(o) for o in c.operands]
            for p in prods:
                producers[p] += 1
            if any("transpose" in p or p in ("copy", "fusion[copy]") for p in prods):
                fed_by_transpose += 1
            outs = []
            for u in self.users.get(c.name, []):
                ui = self.instrs[u]
                if ui.opcode == "get-tuple-element":
                    outs += [self._consumer_desc(v) for v in self.users.get(u, [])]
                else:
                    outs.append(self._consumer_desc(u))
            for o in outs:
                consumers[o] += 1
            if any("transpose" in o or o in ("copy", "fusion[copy]") for o in outs):
                feeds_transpose += 1
            rows[c.name] = {"target": target, "in": in_dts, "out": out_dt,
                            "dim_labels": c.attr("dim_labels"), "window": c.attr("window"),
                            "flops": self.conv_flops(c)}
        return {"count": len(convs), "by_target_and_dtype": dict(by_kind.most_common()),
                "dim_labels": dict(labels.most_common()),
                "operand_layouts": dict(layouts.most_common(8)),
                "operand_producers": dict(producers.most_common(12)),
                "output_consumers": dict(consumers.most_common(12)),
                "convs_fed_by_transpose_or_copy": fed_by_transpose,
                "convs_feeding_transpose_or_copy": feeds_transpose,
                "_rows": rows}

    def gemm_flops(self, ins: Instr) -> float | None:
        """2·(output elements)·(contracted size) for a cuBLAS/cuBLASLt custom call or a dot."""
        try:
            m = re.search(r'lhs_contracting_dimensions"?\s*[:=]\s*\[?"?([\d",\s]*)', ins.attrs)
            if m is None and ins.opcode == "dot":
                m = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", ins.attrs)
            lhs = shapes_of(self.instrs[ins.operands[0]].type)[0][1]
            k = 1
            for i in re.findall(r"\d+", m.group(1)):
                k *= lhs[int(i)]
            out = shapes_of(ins.type)[0][1]
            return 2.0 * float(np.prod(out)) * k
        except Exception:  # noqa: BLE001 - best effort
            return None

    def io_bytes(self, name: str) -> float:
        """Bytes of an op's operands plus its outputs (each read or written once)."""
        ins = self.instrs.get(name)
        if ins is None:
            return 0.0
        size = {"bf16": 2, "f16": 2, "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8,
                "u64": 8}
        nb = lambda t: sum(size.get(dt, 1) * float(np.prod(d)) for dt, d, _ in shapes_of(t))  # noqa: E731
        return nb(ins.type) + sum(nb(self.instrs[o].type) for o in ins.operands
                                  if o in self.instrs)

    def _consumer_desc(self, name: str) -> str:
        return self._producer_desc(name)

    def conv_flops(self, c: Instr) -> float | None:
        """2·(elements of the forward output)·(filter elements)/C_out for a cuDNN conv."""
        try:
            lab = c.attr("dim_labels")
            if not lab:
                return None
            lhs_l, rest = lab.split("_", 1)
            rhs_l, out_l = rest.split("->")
            shp = lambda n: shapes_of(self.instrs[n].type)[0][1]  # noqa: E731
            res = shapes_of(c.type)[0][1]
            t = c.custom_call_target
            if "BackwardInput" in t:
                fwd_out, filt = shp(c.operands[0]), shp(c.operands[1])
            elif "BackwardFilter" in t:
                fwd_out, filt = shp(c.operands[1]), res
            else:
                fwd_out, filt = res, shp(c.operands[1])
            cout = fwd_out[out_l.index("f")]
            return 2.0 * float(np.prod(fwd_out)) * float(np.prod(filt)) / cout
        except Exception:  # noqa: BLE001 - best effort
            return None


# ----------------------------------------------------------------------------- trace
def read_device_events(logdir: str) -> tuple[list[dict], list[str]]:
    from jax._src.profiler import ProfileData

    paths = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))
    if not paths:
        return [], ["no .xplane.pb under " + logdir]
    pdata = ProfileData.from_file(paths[-1])
    events, lines_seen = [], []
    gpu_planes = [p for p in pdata.planes if p.name.startswith("/device:GPU")]
    for plane in gpu_planes:
        for line in plane.lines:
            evs = list(line.events)
            lines_seen.append(f"{plane.name} | {line.name} | {len(evs)}")
            # kernel (and memcpy) events sit on the stream lines; 'XLA Ops'/'XLA Modules'
            # lines (when a converter made them) would double count
            if not line.name.startswith("Stream"):
                continue
            for e in evs:
                st = dict(e.stats)
                events.append({"name": e.name, "start": e.start_ns, "dur": e.duration_ns,
                               "hlo_op": st.get("hlo_op", ""), "hlo_module": st.get("hlo_module", ""),
                               "line": line.name})
    if not gpu_planes:  # CPU: thunks carry hlo_op stats on the host plane
        for plane in pdata.planes:
            for line in plane.lines:
                for e in line.events:
                    st = dict(e.stats)
                    if "hlo_op" in st:
                        events.append({"name": e.name, "start": e.start_ns,
                                       "dur": e.duration_ns, "hlo_op": st["hlo_op"],
                                       "hlo_module": st.get("hlo_module", ""),
                                       "line": line.name})
        lines_seen.append("no GPU plane: host events with hlo_op")
    return events, lines_seen


def kernel_name_category(name: str) -> str:
    n = name.lower()
    if re.search(r"sdpa|fmha|flash|attention", n):
        return "attention_cudnn"
    if re.search(r"conv|fprop|dgrad|wgrad|implicit", n):
        return "convolution"
    if re.search(r"gemm|nvjet|cutlass|matmul", n):
        return "dense_gemm"
    if re.search(r"transpose|copy|memcpy", n):
        return "transpose_copy"
    if "reduce" in n:
        return "groupnorm_reduction"
    return "other"


def union_ns(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, -1e30
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


# ----------------------------------------------------------------------------- GN patch
def _gn_bf16_class():
    import einops

    from vdiff.nn.layers import num_groups_for

    class FrameGroupNorm(nn.Module):  # same name and call: same parameter paths
        dtype: Any = jnp.float32
        fused: str = "off"  # ignored: this ablation is the unfused flax GroupNorm

        @nn.compact
        def __call__(self, x, film=None, *, silu=False):
            b = x.shape[0]
            h = einops.rearrange(x, "b f h w c -> (b f) h w c")
            h = nn.GroupNorm(num_groups=num_groups_for(x.shape[-1]), dtype=self.dtype)(h)
            h = einops.rearrange(h.astype(self.dtype), "(b f) h w c -> b f h w c", b=b)
            if film is not None:
                h = h * (1.0 + film[0][..., None, None, :]) + film[1][..., None, None, :]
            return nn.swish(h) if silu else h

    return FrameGroupNorm


@contextlib.contextmanager
def patched(patches: tuple[str, ...]):
    import vdiff.models.unet3d as unet3d
    import vdiff.nn.attention as attention
    import vdiff.nn.layers as layers

    saved = []
    if "gn_bf16" in patches:
        cls = _gn_bf16_class()
        for mod in (layers, attention, unet3d):
            saved.append((mod, "FrameGroupNorm", getattr(mod, "FrameGroupNorm")))
            setattr(mod, "FrameGroupNorm", cls)
    try:
        yield
    finally:
        for mod, key, val in saved:
            setattr(mod, key, val)


# ----------------------------------------------------------------------------- main work
def attention_flops_fwd(config) -> float:
    """Analytic forward FLOPs of spatial attention (QKᵀ and PV) per step: 4·N·L²·C."""
    m, d = config.model, config.data
    frames = d.num_frames + d.num_images_per_video
    n = config.train.batch_size * frames
    total, size = 0.0, d.resolution
    levels = len(m.channel_mults)
    for level, mult in enumerate(m.channel_mults):
        c = m.base_channels * mult
        blocks = (m.num_res_blocks + (m.num_res_blocks + 1)) if size in m.attn_resolutions else 0
        total += blocks * 4.0 * n * (size * size) ** 2 * c
        if level != levels - 1:
            size //= 2
    c = m.base_channels * m.channel_mults[-1]
    total += 4.0 * n * (size * size) ** 2 * c  # middle block
    return total


def profile_variant(name: str, config, *, steps: int, warmup: int, profile_steps: int,
                    detail: bool, hlo_out: str, trace_keep: str, top: int,
                    patches: tuple[str, ...] = ()) -> dict:
    with patched(patches):
        method = get_method(config)
        mesh = sharding.make_mesh(config.mesh.shape)
        fns = build_train_fns(config, method, mesh)
        bs = config.train.batch_size
        with jax.set_mesh(mesh), nn.logical_axis_rules(fns.rules):
            state = fns.init(jax.random.key(0))
            batch = fns.global_batch(vts.random_batch(method, bs))
            rng = jax.random.key(1)
            t0 = time.perf_counter()
            compiled = fns.step.lower(state, batch, rng).compile()
            compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    cost = cost or {}
    hlo_text = compiled.as_text()
    with jax.set_mesh(mesh), nn.logical_axis_rules(fns.rules):
        state, m, times = vts.time_steps(compiled, state, batch, rng, warmup=warmup, steps=steps)
        logdir = tempfile.mkdtemp(prefix=f"trace_{name}_")
        with jax.profiler.trace(logdir):
            for i in range(profile_steps):
                with jax.profiler.StepTraceAnnotation("train", step_num=i):
                    state, m = compiled(state, batch, rng)
                jax.block_until_ready(m)
    step_s = float(np.median(times))
    stats = jax.devices()[0].memory_stats() or {}
    del state, batch

    events, lines_seen = read_device_events(logdir)
    hlo = HloIndex(hlo_text)
    module_names = collections.Counter(e["hlo_module"] for e in events)
    # keep the train step's module (the profiled loop also runs tiny metric transfers)
    main_module = module_names.most_common(1)[0][0] if module_names else ""
    evs = [e for e in events if e["hlo_module"] in (main_module, "")] if main_module else events
    kernel_ns = sum(e["dur"] for e in evs)
    busy_ns = union_ns([(e["start"], e["start"] + e["dur"]) for e in evs])
    per_op: dict[str, dict] = {}
    for e in evs:
        key = e["hlo_op"] or ("kernel:" + e["name"])
        r = per_op.setdefault(key, {"op": key, "count": 0, "ns": 0.0, "kernels": collections.Counter()})
        r["count"] += 1
        r["ns"] += e["dur"]
        r["kernels"][e["name"]] += 1
    step_ns = step_s * 1e9
    cat_ns = collections.Counter()
    f32_ns, f32_cat = 0.0, collections.Counter()
    rows = []
    conv_rows = hlo.conv_report()["_rows"]
    for key, r in per_op.items():
        cat, what, op_name = hlo.category(key) if not key.startswith("kernel:") else ("", "", "")
        if not cat:
            cat = kernel_name_category(r["kernels"].most_common(1)[0][0])
            what = what or "(no HLO match)"
        ins = hlo.instrs.get(key)
        dt = _main_dtype(ins.type) if ins is not None else ""
        ns = r["ns"] / profile_steps
        cat_ns[cat] += ns
        if dt == "f32":
            f32_ns += ns
            f32_cat[cat] += ns
        fl = conv_rows.get(key, {}).get("flops")
        rows.append({"op": key, "category": cat, "what": what, "out_dtype": dt,
                     "count_per_step": r["count"] / profile_steps, "ms_per_step": ns / 1e6,
                     "pct_of_step": 100.0 * ns / step_ns,
                     "tflops_per_s": (fl / (ns * 1e-9) / 1e12) if fl and ns else None,
                     "kernel": r["kernels"].most_common(1)[0][0][:120],
                     "op_name": re.sub(r"^jit\([^)]*\)/", "", op_name)[-160:]})
    rows.sort(key=lambda r: -r["ms_per_step"])
    by_kernel: dict[str, list] = {}
    for e in evs:
        k = by_kernel.setdefault(e["name"], [0, 0.0])
        k[0] += 1
        k[1] += e["dur"]
    kernel_rows = sorted(({"kernel": n[:160], "category_by_name": kernel_name_category(n),
                           "count_per_step": c / profile_steps,
                           "ms_per_step": ns / profile_steps / 1e6,
                           "pct_of_step": 100.0 * ns / profile_steps / step_ns}
                          for n, (c, ns) in by_kernel.items()), key=lambda r: -r["ms_per_step"])
    kernel_ms = kernel_ns / profile_steps / 1e6
    peak = metrics_lib.peak_flops_per_device()
    xla_flops = float(cost.get("flops", 0.0))
    attn_fwd = attention_flops_fwd(config) if config.model.spatial_attention_impl == "cudnn" else 0.0
    derived = derived_metrics(rows, hlo, step_s, xla_flops, attn_fwd, peak)
    out: dict = {
        "variant": name,
        "patches": list(patches),
        "params_millions": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
            fns.abstract_state.params)) / 1e6,
        "batch_size": bs, "frames": config.data.num_frames + config.data.num_images_per_video,
        "resolution": config.data.resolution, "dtype": config.model.dtype,
        "dropout": config.model.dropout,
        "spatial_attention_impl": config.model.spatial_attention_impl,
        "temporal_attention_impl": config.model.temporal_attention_impl,
        "compile_s": compile_s,
        "step_ms_median": step_s * 1e3, "step_ms_min": float(np.min(times)) * 1e3,
        "videos_per_s": bs / step_s,
        "peak_bytes_in_use_gib": stats.get("peak_bytes_in_use", 0) / 2**30,
        "profiled_steps": profile_steps,
        "kernel_ms_per_step": kernel_ms,
        "gpu_busy_ms_per_step": busy_ns / profile_steps / 1e6,
        "gpu_idle_pct_of_step": 100.0 * (1 - busy_ns / profile_steps / step_ns),
        "kernels_per_step": len(evs) / profile_steps,
        "distinct_ops": len(per_op),
        "ops_without_hlo_match": sum(1 for k in per_op if k not in hlo.instrs),
        "xla_flops_per_step": xla_flops,
        "xla_bytes_accessed_per_step": float(cost.get("bytes accessed", 0.0)),
        "cudnn_spatial_attention_flops_fwd_analytic": attn_fwd,
        "xla_bytes_per_s_TBps": float(cost.get("bytes accessed", 0.0)) / step_s / 1e12,
        "categories_ms_per_step": {c: cat_ns.get(c, 0.0) / 1e6 for c in CATEGORIES},
        "categories_pct_of_step": {c: 100.0 * cat_ns.get(c, 0.0) / step_ns for c in CATEGORIES},
        "f32_output_ops_ms_per_step": f32_ns / 1e6,
        "f32_output_ops_pct_of_kernel_time": 100.0 * f32_ns / max(kernel_ns / profile_steps, 1),
        "f32_output_ops_ms_by_category": {c: v / 1e6 for c, v in f32_cat.most_common()},
        **derived,
        "top_ops": rows[:top],
        "top_op_groups": op_groups(rows, step_s * 1e3, top),
        "top_kernels_by_name": kernel_rows[:top],
        "trace_lines": lines_seen[:40],
    }
    if detail:
        conv = hlo.conv_report()
        conv.pop("_rows")
        out["convolutions"] = conv
        opcode_count = collections.Counter(i.opcode for i in hlo.instrs.values()
                                           if i.computation and "fused" not in i.computation)
        out["hlo_top_level_opcodes"] = dict(opcode_count.most_common(15))
        dt_time = collections.Counter()
        for r in rows:
            dt_time[r["out_dtype"] or "?"] += r["ms_per_step"]
        out["ms_per_step_by_output_dtype"] = dict(dt_time.most_common())
        if hlo_out:
            with gzip.open(hlo_out, "wt") as f:
                f.write(hlo_text)
            out["hlo_text_gz"] = hlo_out
        out["all_ops"] = rows
    if trace_keep:
        for p in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
            if os.path.getsize(p) < 15 * 2**20:
                shutil.copy(p, trace_keep)
                out["xplane"] = trace_keep
    shutil.rmtree(logdir, ignore_errors=True)
    return out


MATH = ("convolution", "attention_cudnn", "dense_gemm")


def op_groups(rows: list[dict], step_ms: float, top: int) -> list[dict]:
    """Ops summed by what they do: category, layer path without indices or UNet level, and
    forward/backward (a step runs each HLO op once, so single ops are all small)."""
    groups: dict[tuple, dict] = {}
    for r in rows:
        o = r["op_name"]
        path = re.sub(r".*UNet3D/(?:(?:down|up)_\d+/|middle/)?", "", o) if "UNet3D" in o else o
        path = re.sub(r"_\d+", "", path)
        path = re.sub(r"/(dot_general|conv_general_dilated)$", "", path)[-90:]
        phase = "bwd" if ("transpose(jvp" in o or "_bwd" in o) else (
            "fwd" if "forward_backward" in o else "step")
        key = (r["category"], path, phase)
        g = groups.setdefault(key, {"category": key[0], "layer_op": key[1], "phase": key[2],
                                    "ops": 0, "kernels": 0.0, "ms_per_step": 0.0})
        g["ops"] += 1
        g["kernels"] += r["count_per_step"]
        g["ms_per_step"] += r["ms_per_step"]
    out = sorted(groups.values(), key=lambda g: -g["ms_per_step"])[:top]
    for g in out:
        g["pct_of_step"] = 100.0 * g["ms_per_step"] / step_ms
    return out


def derived_metrics(rows: list[dict], hlo: HloIndex, step_s: float, xla_flops: float,
                    attn_fwd: float, peak: float | None) -> dict:
    """FLOPs the step really does and how fast each category runs, from the per-op rows.

    XLA's cost_analysis() of the *optimized* GPU module does not count custom calls, so
    the cuDNN convolutions, cuBLAS GEMMs and cuDNN attention are missing from it; they
    are counted here from the HLO shapes (convs, GEMMs) and analytically (attention:
    3× the forward QKᵀ and PV FLOPs, the usual model-FLOPs convention)."""
    conv_fl = sum(v["flops"] or 0 for v in hlo.conv_report()["_rows"].values())
    gemm_fl = 0.0
    for ins in hlo.instrs.values():
        t = ins.custom_call_target.lower()
        if ins.opcode == "custom-call" and ("gemm" in t or "matmul" in t):
            gemm_fl += hlo.gemm_flops(ins) or 0.0
    model = conv_fl + gemm_fl + 3.0 * attn_fwd + xla_flops
    step_ns = step_s * 1e9
    cat_ms, cat_bytes, cat_fl = collections.Counter(), collections.Counter(), collections.Counter()
    for r in rows:
        cat_ms[r["category"]] += r["ms_per_step"]
        ins = hlo.instrs.get(r["op"])
        if r["category"] not in MATH:
            cat_bytes[r["category"]] += hlo.io_bytes(r["op"])
        elif ins is not None and r["category"] == "dense_gemm":
            cat_fl["dense_gemm"] += hlo.gemm_flops(ins) or 0.0
    cat_fl["convolution"] = conv_fl
    cat_fl["attention_cudnn"] = 3.5 * attn_fwd  # flash attention runs fwd + 2.5× fwd in bwd
    per_cat = {}
    for c in CATEGORIES:
        ms = cat_ms.get(c, 0.0)
        d = {"ms_per_step": ms, "pct_of_step": 100.0 * ms * 1e6 / step_ns}
        if c in MATH and ms:
            d["achieved_tflops_per_s"] = cat_fl[c] / (ms * 1e-3) / 1e12
        elif ms:
            d["hlo_io_gb_per_step"] = cat_bytes[c] / 1e9
            d["achieved_tb_per_s"] = cat_bytes[c] / (ms * 1e-3) / 1e12
        per_cat[c] = d
    mem_ms = sum(cat_ms[c] for c in cat_ms if c not in MATH)
    mem_b = sum(cat_bytes.values())
    return {
        "flops_per_step": {
            "cudnn_convolutions (HLO shapes)": conv_fl,
            "cublas_gemms (HLO shapes)": gemm_fl,
            "cudnn_spatial_attention (analytic, 3x fwd)": 3.0 * attn_fwd,
            "xla_cost_analysis (optimized module; omits custom calls)": xla_flops,
            "total_model_flops": model,
        },
        "model_tflops_per_s": model / step_s / 1e12,
        "mfu": (model / step_s / peak) if peak else None,
        "categories": per_cat,
        "math_ms_per_step": sum(cat_ms[c] for c in MATH),
        "memory_bound_ms_per_step": mem_ms,
        "memory_bound_hlo_io_gb_per_step": mem_b / 1e9,
        "memory_bound_achieved_tb_per_s": (mem_b / (mem_ms * 1e-3) / 1e12) if mem_ms else None,
    }


SCALARS = ("variant", "patches", "dropout", "spatial_attention_impl", "temporal_attention_impl",
           "compile_s", "step_ms_median", "step_ms_min", "videos_per_s", "peak_bytes_in_use_gib",
           "kernel_ms_per_step", "gpu_busy_ms_per_step", "gpu_idle_pct_of_step",
           "kernels_per_step", "model_tflops_per_s", "mfu", "categories_ms_per_step")


def reanalyze(prof: dict, hlo_text: str, top: int) -> dict:
    """Re-derives categories and metrics of a saved detailed profile (its `all_ops` rows,
    times as measured) from its optimized HLO, with this file's current rules."""
    hlo = HloIndex(hlo_text)
    conv_rows = hlo.conv_report()["_rows"]
    step_ns = prof["step_ms_median"] * 1e6
    cat_ns, f32_cat, dt_time = collections.Counter(), collections.Counter(), collections.Counter()
    rows = []
    for r in prof["all_ops"]:
        r = dict(r)
        if r["op"] in hlo.instrs:
            cat, what, op_name = hlo.category(r["op"])
            r.update(category=cat, what=what, op_name=re.sub(r"^jit\([^)]*\)/", "", op_name)[-160:],
                     out_dtype=_main_dtype(hlo.instrs[r["op"]].type))
        fl = conv_rows.get(r["op"], {}).get("flops")
        r["tflops_per_s"] = (fl / (r["ms_per_step"] * 1e-3) / 1e12) if fl and r["ms_per_step"] else None
        ns = r["ms_per_step"] * 1e6
        cat_ns[r["category"]] += ns
        dt_time[r["out_dtype"] or "?"] += r["ms_per_step"]
        if r["out_dtype"] == "f32":
            f32_cat[r["category"]] += ns
        rows.append(r)
    rows.sort(key=lambda r: -r["ms_per_step"])
    kernel_ns = sum(cat_ns.values())
    f32_ns = sum(f32_cat.values())
    conv = hlo.conv_report()
    conv.pop("_rows")
    out = dict(prof)
    out.update({
        "categories_ms_per_step": {c: cat_ns.get(c, 0.0) / 1e6 for c in CATEGORIES},
        "categories_pct_of_step": {c: 100.0 * cat_ns.get(c, 0.0) / step_ns for c in CATEGORIES},
        "f32_output_ops_ms_per_step": f32_ns / 1e6,
        "f32_output_ops_pct_of_kernel_time": 100.0 * f32_ns / max(kernel_ns, 1),
        "f32_output_ops_ms_by_category": {c: v / 1e6 for c, v in f32_cat.most_common()},
        "ms_per_step_by_output_dtype": dict(dt_time.most_common()),
        "convolutions": conv,
        "top_ops": rows[:top],
        "top_op_groups": op_groups(rows, prof["step_ms_median"], top),
        "all_ops": rows,
    })
    for k in [k for k in out if k.startswith("model_flops_per_step") or k.startswith("conv_")
              or k in ("mfu_model_flops",)]:
        out.pop(k)
    out.update(derived_metrics(rows, hlo, prof["step_ms_median"] / 1e3,
                               prof["xla_flops_per_step"],
                               prof["cudnn_spatial_attention_flops_fwd_analytic"],
                               metrics_lib.PEAK_FLOPS.get("H200") if "H200" in prof.get(
                                   "_device", "H200") else None))
    return out


def summary_table(res: dict) -> str:
    lines = [f"{res['variant']}: step {res['step_ms_median']:.1f} ms, kernels "
             f"{res['kernel_ms_per_step']:.1f} ms, busy {res['gpu_busy_ms_per_step']:.1f} ms, "
             f"{res['videos_per_s']:.0f} videos/s, model {res['model_tflops_per_s']:.1f} TFLOP/s"]
    for c, v in res["categories_ms_per_step"].items():
        lines.append(f"  {c:22s} {v:8.2f} ms  {res['categories_pct_of_step'][c]:5.1f}%")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default=DEFAULT_VARIANT)
    parser.add_argument("--ablate", default="", help="comma list of " + ",".join(ABLATIONS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--profile_steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", default="")
    parser.add_argument("--hlo_out", default="", help="path of the gzipped optimized HLO")
    parser.add_argument("--trace_out", default="", help="copy the .xplane.pb here")
    parser.add_argument("--deadline_s", type=float, default=1e9,
                        help="skip remaining ablations once this much wall time has passed")
    parser.add_argument("--reanalyze", default="",
                        help="a saved result JSON: re-derive its profile from --reanalyze_hlo "
                             "(no device work) and write --out")
    parser.add_argument("--reanalyze_hlo", default="")
    parser.add_argument("--drop_all_ops", action="store_true",
                        help="with --reanalyze: leave the per-op list out of --out")
    parser.add_argument("--also", action="append", default=[],
                        help="with --reanalyze: NAME=JSON of another run whose step summary "
                             "and ablations to keep under other_runs")
    args = parser.parse_args()
    if args.reanalyze:
        with open(args.reanalyze) as f:
            result = json.load(f)
        with gzip.open(args.reanalyze_hlo, "rt") as f:
            result["profile"] = reanalyze(result["profile"], f.read(), args.top)
        total = result["profile"]["flops_per_step"]["total_model_flops"]
        if args.drop_all_ops:
            result["profile"].pop("all_ops")
        result["reanalyzed"] = ("categories and derived metrics recomputed offline from the "
                                "saved HLO and per-op times: python "
                                "benchmarks/speed/profile_vdm_step.py "
                                "--reanalyze=... --reanalyze_hlo=...")
        for spec in args.also:
            key, path = spec.split("=", 1)
            with open(path) as f:
                other = json.load(f)
            def keep(r):
                d = {k: r[k] for k in SCALARS if k in r}
                if "step_ms_median" in d:  # same FLOPs as the reanalyzed program
                    d["model_tflops_per_s"] = total / (d["step_ms_median"] * 1e-3) / 1e12
                    d["mfu"] = d["model_tflops_per_s"] * 1e12 / metrics_lib.PEAK_FLOPS["H200"]
                if not other.get("xla_flags"):
                    d.pop("categories_ms_per_step", None)
                    d["note"] = ("command buffers on: kernels carry the command buffer as "
                                 "hlo_op, so no per-op categories from this run")
                return d

            result.setdefault("other_runs", {})[key] = {
                "command": other.get("command"), "xla_flags": other.get("xla_flags"),
                "profile": keep(other["profile"]),
                "ablations": {k: (keep(v) if "step_ms_median" in v else v)
                              for k, v in other.get("ablations", {}).items()}}
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        print(summary_table(result["profile"]))
        return
    t_start = time.perf_counter()
    dev = jax.devices()[0]
    result = {"benchmark": "vdm_step_profile",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": f"{jax.device_count()} x {dev.device_kind}", "jax": jax.__version__,
              "xla_flags": os.environ.get("XLA_FLAGS", ""),
              "command": " ".join(["python", "benchmarks/speed/profile_vdm_step.py",
                                   *sys.argv[1:]]),
              "variant_spec": args.variant, "profile": None, "ablations": {}}

    def save():
        if args.out:
            with open(args.out, "w") as f:
                json.dump(result, f, indent=2)

    name, path, *rest = args.variant.split(":")
    overrides = rest[0] if rest else ""
    config = vts.load_config(path, overrides)
    result["profile"] = profile_variant(
        name, config, steps=args.steps, warmup=args.warmup, profile_steps=args.profile_steps,
        detail=True, hlo_out=args.hlo_out, trace_keep=args.trace_out, top=args.top)
    save()
    print(summary_table(result["profile"]), flush=True)
    for abl in filter(None, args.ablate.split(",")):
        if time.perf_counter() - t_start > args.deadline_s:
            result["ablations"][abl] = {"skipped": "deadline"}
            continue
        extra, patches = ABLATIONS[abl]
        cfg = vts.load_config(path, ",".join(filter(None, [overrides, extra])))
        try:
            r = profile_variant(f"{name}+{abl}", cfg, steps=args.steps, warmup=args.warmup,
                                profile_steps=max(1, args.profile_steps - 1), detail=False,
                                hlo_out="", trace_keep="", top=10, patches=patches)
            r.pop("trace_lines", None)
            result["ablations"][abl] = r
            print(summary_table(r), flush=True)
        except Exception as e:  # noqa: BLE001 - report and go on
            result["ablations"][abl] = {"error": f"{type(e).__name__}: {str(e)[:400]}"}
        save()
    save()
    p = result["profile"]
    print(json.dumps({k: p[k] for k in ("step_ms_median", "kernel_ms_per_step",
                                        "gpu_idle_pct_of_step", "f32_output_ops_pct_of_kernel_time",
                                        "model_tflops_per_s", "mfu")}, indent=1))
    for r in p["top_ops"][:25]:
        print(f"{r['ms_per_step']:8.2f} ms {r['pct_of_step']:5.1f}% x{r['count_per_step']:<4g} "
              f"{r['category']:20s} {r['out_dtype']:5s} {r['op'][:40]:40s} {r['op_name'][-60:]}")


if __name__ == "__main__":
    main()
