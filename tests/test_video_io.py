"""Video writing/reading round trips and corrupt-file errors."""

import numpy as np
import pytest

from vdiff.data import video_io


def _video(t=5, h=18, w=22, c=1):
    y, x = np.mgrid[:h, :w]
    frames = [((x * 10 + y * 5 + 20 * i) % 256) for i in range(t)]
    return np.stack(frames)[..., None].repeat(c, -1).astype(np.uint8)


def test_gif_round_trip_is_exact(tmp_path):
    v = _video(c=3)
    path = str(tmp_path / "v.gif")
    video_io.write_video(path, v, fps=4)
    np.testing.assert_array_equal(video_io.read_video(path), v)


def test_mp4_round_trip_is_close(tmp_path):
    v = np.repeat(np.linspace(30, 220, 5, dtype=np.uint8)[:, None, None, None], 16, 1)
    v = np.repeat(np.repeat(v, 16, 2), 1, 3)  # flat frames: codec-friendly, exact-ish
    path = str(tmp_path / "v.mp4")
    video_io.write_video(path, v, fps=8)
    out = video_io.read_video(path)
    assert out.shape == (5, 16, 16, 3)
    assert np.abs(out.astype(int) - v.astype(int)).mean() < 3


def test_odd_sizes_are_padded_for_mp4(tmp_path):
    path = str(tmp_path / "odd.mp4")
    video_io.write_video(path, _video(h=17, w=9), fps=8)
    assert video_io.read_video(path).shape[1:3] == (18, 10)


def test_grid_layout(tmp_path):
    videos = np.stack([np.full((3, 4, 5, 1), 10 * (i + 1), np.uint8) for i in range(2)])
    path = str(tmp_path / "grid.png")
    video_io.write_grid_png(path, videos)
    import imageio.v3 as iio
    grid = iio.imread(path)
    assert grid.shape == (2 * 5 + 1, 3 * 6 + 1, 3)
    assert grid[1, 1, 0] == 10 and grid[6, 1, 0] == 20 and grid[0, 0, 0] == 255


def test_to_uint8_clips():
    np.testing.assert_array_equal(video_io.to_uint8(np.array([-2.0, -1.0, 0.0, 1.0, 3.0])),
                                  [0, 0, 128, 255, 255])


def test_corrupt_file_raises_clear_error(tmp_path):
    path = tmp_path / "bad.mp4"
    path.write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match="could not decode video"):
        video_io.read_video(str(path))
    with pytest.raises(FileNotFoundError):
        video_io.read_video(str(tmp_path / "missing.mp4"))


def test_bad_frames_rejected(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        video_io.write_video(str(tmp_path / "a.gif"), np.zeros((2, 4, 4, 1), np.float32))
    with pytest.raises(ValueError, match="extension"):
        video_io.write_video(str(tmp_path / "a.avi"), np.zeros((2, 4, 4, 1), np.uint8))
