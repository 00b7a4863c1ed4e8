"""The pixel convention (vdiff.core.pixels): exact round trips, array library kept, image
files read into [−1, 1] with one-line errors."""

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from vdiff.core import pixels
from vdiff.errors import ConfigError


def test_round_trip_is_exact_for_every_uint8_value():
    u8 = np.arange(256, dtype=np.uint8)
    x = pixels.to_unit_range(u8)
    assert x.dtype == np.float32 and x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_array_equal(pixels.to_uint8(x), u8)


def test_keeps_the_array_library():
    u8 = np.array([0, 255], np.uint8)
    assert isinstance(pixels.to_unit_range(u8), np.ndarray)
    y = pixels.to_unit_range(jnp.asarray(u8))
    assert isinstance(y, jnp.ndarray) and not isinstance(y, np.ndarray)
    np.testing.assert_array_equal(np.asarray(y), [-1.0, 1.0])


def test_as_unit_range_maps_uint8_and_passes_floats_through():
    np.testing.assert_array_equal(pixels.as_unit_range(np.array([0, 255], np.uint8)), [-1.0, 1.0])
    f = np.array([0.25, -0.5], np.float64)
    out = pixels.as_unit_range(f)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, f.astype(np.float32))


def test_to_uint8_rounds_and_clips():
    np.testing.assert_array_equal(pixels.to_uint8(np.array([-2.0, 2.0, 0.0])), [0, 255, 128])


def test_load_image_reads_rgb_in_unit_range(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    x = pixels.load_image(str(tmp_path / "rgb.png"))
    assert x.shape == (5, 7, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(pixels.to_uint8(x), rgb)
    grey = pixels.load_image(str(tmp_path / "grey.png"))  # converted to three channels
    np.testing.assert_array_equal(pixels.to_uint8(grey), np.repeat(rgb[..., :1], 3, -1))


def test_load_image_errors_name_the_flag(tmp_path):
    with pytest.raises(ConfigError, match=r"^--image '.*nothing.png': no such file$"):
        pixels.load_image(str(tmp_path / "nothing.png"), flag="--image")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=r"^--image_b '.*broken.png': cannot read image \("):
        pixels.load_image(str(tmp_path / "broken.png"), flag="--image_b")


def test_resize_image_equals_resizing_the_decoded_file(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (9, 6, 3), dtype=np.uint8)
    want = Image.fromarray(rgb).resize((4, 5), Image.Resampling.BICUBIC)
    got = pixels.resize_image(pixels.to_unit_range(rgb), (5, 4))
    assert got.shape == (5, 4, 3)
    np.testing.assert_array_equal(pixels.to_uint8(got), np.asarray(want))
