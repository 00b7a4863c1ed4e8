"""Progress in plain logs, ETAs from the steady rate, and a quiet dataset build."""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO
from vdiff import progress


def test_eta_ignores_the_first_unit_that_carries_compilation():
    """The trainer's case: 100 s of compile in the first window, then 1 step/s."""
    rate = progress.SteadyRate()
    rate.mark(10, now=110.0)  # first window: 10 steps, 100 s of it compiling
    assert rate.eta(990) is None  # no steady-state time yet: the caller uses the window rate
    rate.mark(20, now=120.0)
    assert rate.eta(980) == pytest.approx(980.0)  # not ≈ 980 · 120/20 = 5880
    rate.mark(40, now=140.0)
    assert rate.eta(960) == pytest.approx(960.0)


def test_progress_logs_counts_and_an_eta_without_a_terminal(caplog, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    clock = iter([0.0, 30.0, 31.0, 32.0, 33.0, 34.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="vdiff.progress"):
        with progress.Progress("sampling extend", 4, unit="NFE", every=0.5) as bar:
            for _ in range(4):
                bar.update()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("sampling extend: 1/4 NFE (25%), 0:30 elapsed, ETA --")
    assert lines[1] == "sampling extend: 2/4 NFE (50%), 0:31 elapsed, ETA 0:02"  # 1 s/NFE
    assert lines[-1] == "sampling extend: 4 NFE in 0:34"


def test_track_counts_finished_items(caplog):
    with caplog.at_level(logging.INFO, logger="vdiff.progress"):
        assert list(progress.track(range(3), "x", every=0.0)) == [0, 1, 2]
    assert [r.getMessage().split(",")[0] for r in caplog.records][:3] == [
        "x: 1/3 (33%)", "x: 2/3 (67%)", "x: 3/3 (100%)"]


def test_dataset_build_logs_its_own_line_not_a_download(tmp_path):
    """TFDS claims "Downloading and preparing dataset" and warns about dataset_info.json."""
    out = subprocess.run([sys.executable, "-m", "vdiff.data.prepare", "digits",
                          "--digits_config=tiny", f"--data_dir={tmp_path}"], cwd=REPO,
                         capture_output=True, text=True, timeout=300, check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "Downloading" not in text and "downloaded" not in text, text
    assert "dataset_info.json" not in text, text
    assert "building dataset moving_digits/tiny from scikit-learn's bundled digits" in text
    assert os.path.isdir(tmp_path / "moving_digits" / "tiny" / "1.0.0")


class _CountingWindows:
    """Stands in for `sampling.WindowSampler`: counts the windows an application samples."""

    def __init__(self, window: int):
        self.window, self.count = window, 0

    def free(self, rng):
        self.count += 1
        return np.zeros((1, self.window, 2, 2, 1), np.float32)

    def frames(self, rng, video, mask):
        self.count += 1
        return np.zeros_like(video)


@pytest.mark.parametrize("window,total,start", [(8, 32, 0), (8, 30, 1), (8, 9, 3),
                                                (16, 64, 16), (5, 40, 0)])
def test_sampling_progress_total_counts_every_extend_window(window, total, start):
    import jax

    from vdiff import sampling
    ws = _CountingWindows(window)
    given = None if not start else np.zeros((1, start, 2, 2, 1), np.float32)
    sampling.extend(ws, jax.random.key(0), total, given)
    assert sampling.extend_windows(window, total, start) == ws.count
