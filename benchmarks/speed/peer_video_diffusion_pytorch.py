"""Times the peer video-diffusion-pytorch 0.7.0 (lucidrains) training step and denoiser
call, for comparison with `vdm_train_step.py` in the same run.

  PYTHONPATH=/tmp/peer python benchmarks/speed/peer_video_diffusion_pytorch.py --out=peer.json
  python benchmarks/speed/peer_video_diffusion_pytorch.py --quick      # CPU smoke test

Default pairing (chosen by training FLOPs per video, 16x64x64x3, batch 1, counted on CPU):
ours = configs/vdm_ucf.py with model.base_channels=64, data.num_images_per_video=0
(73.0M params, 1.338 TFLOP/video: XLA cost analysis of the lowered train step). Peer
Unet3D(dim, dim_mults=(1,2,4,8)) under FlopCounterMode, loss forward+backward:
  dim 48: 20.9M, 0.472 TF | 64: 35.7M, 0.747 | 80: 54.5M, 1.087 | 88: 65.4M, 1.281 | 96: 77.2M, 1.491
At equal width (dim 64) the peer does ~56% of our FLOPs (it has full spatial attention
only in the middle block; linear attention elsewhere), so the default is dim=88, the
closest match (-4%, 65M params). The counters differ slightly (XLA also counts
elementwise ops and the optimizer; FlopCounterMode counts matmul/conv/SDPA only).
Loss is the peer's own GaussianDiffusion (eps-prediction, l2) and the
optimizer AdamW, as a trainer would run it.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import statistics
import sys
import time
import types


def _noop_attr(attr: str):
    if attr.startswith("__"):  # keep inspect/importlib probing (__file__, __path__) honest
        raise AttributeError(attr)
    return lambda *a, **k: None


SHIMMED: list[str] = []


def _shim_unused_imports() -> None:
    """The peer module imports torchvision (transforms/utils), PIL and tqdm at top level
    for its GIF dataset, Trainer and sampling loop only; none is used by Unet3D or
    GaussianDiffusion.forward. Where the GPU machine lacks one (a torchvision wheel must
    match the installed torch build exactly), stand a stub module in its place whose
    every attribute is a no-op callable (a default argument calls T.ToTensor() at import)."""
    for name in ("torchvision", "PIL", "tqdm"):
        try:
            __import__(name)
            continue
        except Exception:  # noqa: BLE001 - missing or built for another torch
            pass
        for mod in (name, "torchvision.transforms", "torchvision.utils", "PIL.Image"):
            if mod.split(".")[0] == name:
                sys.modules[mod] = types.ModuleType(mod)
                sys.modules[mod].__getattr__ = _noop_attr
                SHIMMED.append(mod)
        root = sys.modules[name]
        if name == "torchvision":
            root.transforms, root.utils = sys.modules["torchvision.transforms"], sys.modules["torchvision.utils"]
        elif name == "PIL":
            root.Image = sys.modules["PIL.Image"]


_shim_unused_imports()
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from video_diffusion_pytorch import GaussianDiffusion, Unet3D  # noqa: E402


def build(args, device):
    unet = Unet3D(dim=args.dim, dim_mults=tuple(args.dim_mults), channels=3)
    diffusion = GaussianDiffusion(unet, image_size=args.res, num_frames=args.frames,
                                  timesteps=1000, loss_type="l2").to(device)
    return unet, diffusion


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def flops_per_video(args, device) -> dict:
    """FLOPs at batch 1 (fp32; FlopCounterMode counts matmuls/convs/SDPA only)."""
    unet, diffusion = build(args, device)
    x = torch.rand(1, 3, args.frames, args.res, args.res, device=device)
    t = torch.randint(0, 1000, (1,), device=device)
    with torch.no_grad():
        fwd = count_flops(lambda: unet(x, t))
    train = count_flops(lambda: diffusion(x).backward())
    return {"denoiser_fwd_flops_per_video": fwd, "train_flops_per_video": train}


def timed(fn, warmup: int, steps: int, sync) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def bench_one(args, device, batch: int, mode: str) -> dict:
    """mode: 'train_eager', 'train_compiled' or 'denoiser' (Unet3D forward, no grad)."""
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    unet, diffusion = build(args, device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    x = torch.rand(batch, 3, args.frames, args.res, args.res, device=device)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    compile_s = None
    if mode == "denoiser":
        t = torch.randint(0, 1000, (batch,), device=device)

        def step():
            with torch.no_grad(), amp:
                return unet(x, t)
    else:
        opt = torch.optim.AdamW(diffusion.parameters(), lr=1e-4)
        # dynamic=False: with automatic dynamic shapes inductor fails on a symbolic
        # comparison in the peer graph (seen with torch 2.13 CPU).
        # dynamic=False: with automatic dynamic shapes, inductor fails on a symbolic
        # comparison in the peer graph (torch 2.13); shapes are fixed here anyway.
        loss_fn = torch.compile(diffusion, dynamic=False) if mode == "train_compiled" else diffusion

        def step():
            with amp:
                loss = loss_fn(x)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss
        if mode == "train_compiled":  # first call compiles; time it apart from the warmup
            t0 = time.perf_counter()
            step()
            sync()
            compile_s = time.perf_counter() - t0
    times = timed(step, args.warmup, args.steps, sync)
    med = statistics.median(times)
    return {"batch_size": batch, "step_s_median": med, "step_s_min": min(times),
            "videos_per_s": batch / med, "compile_s": compile_s,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=88, help="88: FLOP-matched to our base 64 (see top)")
    p.add_argument("--dim_mults", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--res", type=int, default=64)
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[8, 32])
    p.add_argument("--modes", nargs="+", default=["train_eager", "train_compiled", "denoiser"])
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--flops_only", action="store_true", help="count FLOPs/params, no timing")
    p.add_argument("--quick", action="store_true", help="tiny CPU smoke run")
    p.add_argument("--out", default="")
    args = p.parse_args()
    if args.quick:
        args.dim, args.dim_mults, args.frames, args.res = 8, [1, 2], 4, 16
        args.batch_sizes, args.warmup, args.steps, args.dtype = [1, 2], 1, 2, "fp32"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    spec = importlib.util.find_spec("video_diffusion_pytorch")
    from importlib.metadata import version
    unet, _ = build(args, torch.device("cpu"))
    result = {
        "benchmark": "peer_video_diffusion_pytorch",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "peer": f"video-diffusion-pytorch {version('video-diffusion-pytorch')} ({spec.origin})",
        "shimmed_modules": SHIMMED,
        "config": {"dim": args.dim, "dim_mults": args.dim_mults, "frames": args.frames,
                   "resolution": args.res, "channels": 3, "dtype": args.dtype,
                   "loss": "l2 eps", "optimizer": "AdamW"},
        "params_millions": sum(p.numel() for p in unet.parameters()) / 1e6,
        **flops_per_video(args, device),
        "runs": {},
    }
    del unet
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}), flush=True)
    if not args.flops_only:
        for batch in args.batch_sizes:
            for mode in args.modes:
                name = f"{mode}_b{batch}"
                try:
                    result["runs"][name] = bench_one(args, device, batch, mode)
                except torch.OutOfMemoryError as e:  # record and go on with the next run
                    result["runs"][name] = {"batch_size": batch, "error": f"OOM: {str(e)[:200]}"}
                except Exception as e:  # noqa: BLE001 - e.g. a compile failure
                    result["runs"][name] = {"batch_size": batch, "error": f"{type(e).__name__}: {str(e)[:500]}"}
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                print(json.dumps({name: result["runs"][name]}), flush=True)
                write(result, args.out)  # after each run: a timeout keeps what finished
    print(json.dumps(result, indent=2))
    write(result, args.out)


def write(result: dict, path: str) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
