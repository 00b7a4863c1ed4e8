"""The pixel convention (vdiff.core.pixels): exact round trips, array library kept."""

import jax.numpy as jnp
import numpy as np

from vdiff.core import pixels


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
