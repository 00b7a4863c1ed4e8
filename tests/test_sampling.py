"""Video applications on a tiny random model: shapes, conditioning and exact replacement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import load_config
from vdiff import sampling
from vdiff.errors import ConfigError
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


@pytest.mark.parametrize("conditioning", ["replacement", "reconstruction"])
def test_interpolate_keeps_input_frames(setup, conditioning):
    config, method, params = setup
    ws = _ws(method, params, conditioning=conditioning)
    video = jax.random.uniform(jax.random.key(3), (2, 5, 16, 16, 1), minval=-1, maxval=1)
    out = sampling.interpolate(ws, jax.random.key(4), video)
    assert out.shape == (2, 10, 16, 16, 1)
    np.testing.assert_allclose(out[:, ::2], video, atol=1e-6)
    assert np.all(np.abs(out[:, 1::2]) <= 1.0)


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
    with pytest.raises(ConfigError, match="unknown application"):
        sampling.SampleOptions(application="outpaint").check()


def test_input_video_size_error(tmp_path):
    from vdiff.data import video_io
    path = str(tmp_path / "in.gif")
    video_io.write_video(path, np.zeros((3, 20, 20, 1), np.uint8))
    with pytest.raises(ConfigError, match="20x20 but this application needs 16x16"):
        sampling.load_input_video(path, channels=1, size=16, min_frames=1)
