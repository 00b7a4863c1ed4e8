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
        video_io.write_video(str(tmp_path / "a.flv"), np.zeros((2, 4, 4, 1), np.uint8))


@pytest.mark.parametrize("ext", [".avi", ".webm", ".mov", ".gif"])
def test_decode_video_resizes_and_center_crops(tmp_path, ext):
    # Left/right thirds dark, middle bright: the center crop of a 3:2 frame is mostly bright.
    t, h, w = 6, 40, 60
    frames = np.full((t, h, w, 3), 30, np.uint8)
    frames[:, :, 20:40] = 220
    frames[:, :4] += np.arange(t, dtype=np.uint8)[:, None, None, None] * 10  # frames differ
    path = str(tmp_path / f"v{ext}")
    video_io.write_video(path, frames, fps=10)
    out = video_io.decode_video(path, resolution=20)
    assert out.shape == (t, 20, 20, 3) and out.dtype == np.uint8
    # Shorter side 40 → 20 (width 60 → 30); the central 20 columns are the bright band.
    assert out[:, :, 5:15].mean() > 180 and abs(int(out[:, :, 0].mean()) - 125) < 100


def test_decode_video_rejects_bad_files(tmp_path):
    good = str(tmp_path / "good.avi")
    video_io.write_video(good, np.random.default_rng(0).integers(0, 255, (30, 64, 64, 3),
                                                                  dtype=np.uint8), fps=25)
    data = open(good, "rb").read()
    cases = {"empty.avi": b"", "text.avi": b"hello, not a video", "cut.avi": data[:len(data) // 2]}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(video_io.DecodeError):
            video_io.decode_video(str(tmp_path / name), resolution=32)
    with pytest.raises(video_io.DecodeError, match="zero-byte"):
        video_io.decode_video(str(tmp_path / "empty.avi"))
    assert video_io.decode_video(good, resolution=32, max_frames=7).shape == (7, 32, 32, 3)


def test_frame_folder(tmp_path):
    from PIL import Image

    for i in range(4):
        Image.fromarray(np.full((10, 16, 3), 40 * i, np.uint8)).save(tmp_path / f"{i:03d}.png")
    out = video_io.read_frame_folder(str(tmp_path), resolution=8)
    assert out.shape == (4, 8, 8, 3)
    np.testing.assert_array_equal(out[:, 0, 0, 0], [0, 40, 80, 120])
