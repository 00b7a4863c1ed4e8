"""Video applications on a tiny random model: shapes, conditioning and exact replacement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import load_config
from vdiff import sampling
from vdiff.errors import ConfigError, InputError
from vdiff.methods import get_method


@pytest.fixture(scope="module")
def setup():
    config = load_config("vdm_digits", "runlocal")
    method = get_method(config)
    params = jax.jit(lambda r: method.init(r, method.example_batch(1)))(jax.random.key(0))
    from vdiff.train.sharding import strip_boxes
    return config, method, strip_boxes(params)


def _ws(method, params, **kw):
    opts = sampling.SampleOptions(sampler="ddim", num_steps=3, num_samples=2, **kw)
    labels = jnp.array([1, 2], jnp.int32)
    return sampling.WindowSampler(method, params, opts, labels)


def test_extend_length_and_context(setup):
    config, method, params = setup
    ws = _ws(method, params, conditioning="replacement")
    t = config.data.num_frames
    start = jax.random.uniform(jax.random.key(1), (2, t, 16, 16, 1), minval=-1, maxval=1)
    out = sampling.extend(ws, jax.random.key(2), 3 * t + 1, start)
    assert out.shape == (2, 3 * t + 1, 16, 16, 1)
    np.testing.assert_array_equal(out[:, :t], start)  # the given frames are kept


def test_extend_from_fewer_than_half_a_window(setup):
    """Fewer than T/2 given frames (down to one): the first window is conditioned on those
    alone and the rest follow as usual.  Before: a shape mismatch in the concatenation."""
    config, method, params = setup
    ws = _ws(method, params, conditioning="replacement")
    t = config.data.num_frames
    for given in range(1, t // 2):
        start = jax.random.uniform(jax.random.key(given), (2, given, 16, 16, 1), minval=-1, maxval=1)
        out = sampling.extend(ws, jax.random.key(2), 2 * t + 1, start)
        assert out.shape == (2, 2 * t + 1, 16, 16, 1)
        np.testing.assert_array_equal(out[:, :given], start)


@pytest.mark.parametrize("conditioning", ["replacement", "reconstruction"])
def test_interpolate_keeps_input_frames(setup, conditioning):
    config, method, params = setup
    ws = _ws(method, params, conditioning=conditioning)
    video = jax.random.uniform(jax.random.key(3), (2, 5, 16, 16, 1), minval=-1, maxval=1)
    out = sampling.interpolate(ws, jax.random.key(4), video)
    assert out.shape == (2, 9, 16, 16, 1)  # 2·5 − 1: the last frame is an input frame
    np.testing.assert_allclose(out[:, ::2], video, atol=1e-6)
    assert np.all(np.abs(out[:, 1::2]) <= 1.0)



@pytest.mark.parametrize("window", [3, 4, 5, 8, 16])
def test_interpolation_windows_have_observed_frames_on_both_sides(window):
    """Layout of `interpolate`: output frame 2i is input frame i; every new (odd) frame is
    kept from exactly one window, inside which both its neighbours are observed; windows
    start and end on observed frames and share their boundary frame."""
    for num_input in range(1, 14):
        length = 2 * num_input - 1
        starts, span = sampling.interpolation_windows(num_input, window)
        assert span <= window and span % 2 == 1
        made = np.zeros(length, int)
        for s in starts:
            assert s % 2 == 0 and s < length - 1
            for p in range(s + 1, s + span - 1, 2):  # the new frames this window keeps
                assert s <= p - 1 and p + 1 <= s + span - 1 < s + window
                if p < length:
                    made[p] += 1
        np.testing.assert_array_equal(made[1::2], 1)
        assert not starts or starts[0] == 0
        assert all(b == a + span - 1 for a, b in zip(starts, starts[1:]))


class _MidpointWindows:
    """A fake window sampler: each new frame is the mean of its two observed neighbours in the
    window it was given (NaN where one is missing), observed frames are returned as given."""

    def __init__(self, window):
        self.window = window

    def frames(self, rng, video, frame_mask):
        m = np.asarray(frame_mask, bool)
        out = np.array(video, np.float32)
        for p in np.flatnonzero(~m):
            ok = 0 < p < len(m) - 1 and m[p - 1] and m[p + 1]
            out[:, p] = 0.5 * (out[:, p - 1] + out[:, p + 1]) if ok else np.nan
        return jnp.asarray(out)


@pytest.mark.parametrize("window", [4, 5, 16])
def test_interpolate_never_extrapolates(window):
    """Every output frame is an input frame or lies between two in its window, so the fake
    sampler's midpoints are exact.  Before: the last new frame of each window had no right
    neighbour (NaN here) and the output had a trailing extrapolated frame (2·T_in frames)."""
    video = jax.random.uniform(jax.random.key(6), (2, 11, 3, 3, 1), minval=-1, maxval=1)
    out = np.asarray(sampling.interpolate(_MidpointWindows(window), jax.random.key(7), video))
    assert out.shape == (2, 21, 3, 3, 1)
    np.testing.assert_array_equal(out[:, ::2], video)
    np.testing.assert_allclose(out[:, 1::2], 0.5 * (video[:, :-1] + video[:, 1:]), atol=1e-6)


def test_reconstruction_guidance_pulls_toward_observation(setup):
    """Guided frames end closer to the observed frames than an unguided sample does."""
    config, method, params = setup
    t = config.data.num_frames
    target = jnp.full((2, t, 16, 16, 1), 0.5)
    mask = np.arange(t) < t // 2
    free = _ws(method, params).free(jax.random.key(5))
    guided = _ws(method, params, recon_weight=1.0).frames(jax.random.key(5), target, mask)
    err = lambda v: float(jnp.mean((v[:, : t // 2] - 0.5) ** 2))  # noqa: E731
    assert err(guided) < 0.5 * err(free)


def test_options_are_checked():
    with pytest.raises(ConfigError, match="unknown sampler"):
        sampling.SampleOptions(sampler="euler").check()
    with pytest.raises(ConfigError, match="unknown application"):  # the method's table
        sampling.run_sampling(load_config("vdm_digits", "runlocal"), "/no/such/workdir",
                              sampling.SampleOptions(application="outpaint"))


def test_input_video_size_error(tmp_path):
    from vdiff.data import video_io
    path = str(tmp_path / "in.gif")
    video_io.write_video(path, np.zeros((3, 20, 20, 1), np.uint8))
    with pytest.raises(InputError, match="20x20 but this application needs 16x16"):
        sampling.load_input_video(path, channels=1, size=16, min_frames=1)


def test_options_resolve_config_then_application_then_flags():
    import ml_collections

    config = ml_collections.ConfigDict(dict(
        sample=dict(sampler="ddim", num_steps=32, guidance_scale=2.0, fps=4, num_samples=20),
        apps=dict(extend=dict(num_steps=16, num_frames=64, conditioning="replacement"))))
    free = sampling.SampleOptions.resolve(config, {"application": "unconditional"})
    assert (free.sampler, free.num_steps, free.guidance_scale, free.fps) == ("ddim", 32, 2.0, 4)
    assert free.num_samples == sampling.SampleOptions.num_samples  # periodic count stays apart
    ext = sampling.SampleOptions.resolve(config, {"application": "extend", "num_steps": 8})
    assert (ext.num_steps, ext.num_frames, ext.conditioning) == (8, 64, "replacement")
    assert ext.sampler == "ddim"
    bare = sampling.SampleOptions.resolve(ml_collections.ConfigDict(), {})
    assert bare == sampling.SampleOptions()


def test_options_resolve_rejects_unknown_application_settings():
    import ml_collections

    config = ml_collections.ConfigDict(dict(apps=dict(extend=dict(num_frame=64))))
    with pytest.raises(ConfigError, match=r"config.apps.extend has unknown settings \['num_frame'\]"):
        sampling.SampleOptions.resolve(config, {"application": "extend"})
