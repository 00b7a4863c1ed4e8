"""Every CLI turns a user error into one line on stderr, exit code 2, no traceback.

The matrix runs in one subprocess (`_drive`): each CLI is entered the way `python -m` enters
it (`runpy` as `__main__`; `vdiff.main.run()` for the absl CLI) with its stderr captured at
the file-descriptor level, so one JAX start-up serves every case. One case also runs as a
plain `python -m` subprocess.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO

MAIN = "vdiff.main"
DIGITS = f"--config={REPO}/configs/vdm_digits.py:runlocal"
INTERPOLATION = f"--config={REPO}/configs/interpolation.py"


def _files(root) -> dict[str, str]:
    """Bad inputs: missing, empty, corrupt, wrong-shape and too-short files."""
    from vdiff.data import video_io

    rng = np.random.default_rng(0)
    (root / "empty.mp4").write_bytes(b"")
    (root / "corrupt.mp4").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (root / "corrupt.npz").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    np.savez(root / "wrong_ndim.npz", videos=np.zeros((4, 16, 16), np.uint8))
    np.savez(root / "rgb.npz", videos=np.zeros((2, 4, 32, 32, 3), np.uint8))
    np.savez(root / "short.npz", videos=np.zeros((2, 4, 16, 16, 3), np.uint8))
    np.savez(root / "ok.npz", videos=np.zeros((3, 16, 16, 16, 3), np.uint8))
    ramp = (np.arange(2)[:, None, None, None] * 80 * np.ones((2, 8, 8, 3))).astype(np.uint8)
    video_io.write_video(str(root / "short_8px.gif"), ramp)
    big = (np.arange(3)[:, None, None, None] * 80 * np.ones((3, 32, 32, 3))).astype(np.uint8)
    video_io.write_video(str(root / "big.gif"), big)
    (root / "empty_workdir").mkdir()
    names = {"empty": "empty.mp4", "corrupt": "corrupt.mp4", "corrupt_npz": "corrupt.npz",
             "wrong_ndim": "wrong_ndim.npz", "rgb": "rgb.npz", "short": "short.npz",
             "ok": "ok.npz", "short_8px": "short_8px.gif", "big": "big.gif",
             "empty_workdir": "empty_workdir", "missing": "missing.mp4",
             "missing_dir": "no_such_dir"}
    return {k: str(root / v) for k, v in names.items()}


# (id, module, argv with {placeholders}, a regex the one line must match)
CASES = [
    # vdiff.main: flags and configs
    ("main-unknown-config-file", MAIN, ["--config=configs/does_not_exist.py",
                                        "--workdir={empty_workdir}"], r"does_not_exist\.py"),
    ("main-unknown-config-key", MAIN, [DIGITS, "--workdir={empty_workdir}",
                                       "--config.train.batch_sz=8"], r"batch_sz"),
    ("main-bad-flag-sampler", MAIN, [DIGITS, "--workdir={empty_workdir}", "--mode=sample",
                                     "--sampler=nope"], r"unknown sampler 'nope'"),
    ("main-bad-flag-num-steps", MAIN, [DIGITS, "--workdir={empty_workdir}", "--mode=sample",
                                       "--num_steps=-1"], r"num_steps .* must be positive"),
    ("main-bad-flag-mode", MAIN, [DIGITS, "--workdir={empty_workdir}", "--mode=nope"],
     r"--mode=nope"),
    # vdiff.main: workdirs and checkpoints
    ("main-workdir-without-checkpoint", MAIN, [DIGITS, "--workdir={empty_workdir}",
                                               "--mode=sample"], r"no checkpoints"),
    ("main-missing-workdir", MAIN, [DIGITS, "--workdir={missing_dir}", "--mode=sample"],
     r"no_such_dir"),
    # vdiff.main: input videos (checked before any checkpoint is read)
    ("main-extend-corrupt-video", MAIN, [DIGITS, "--workdir={empty_workdir}", "--mode=sample",
                                         "--application=extend", "--input_video={corrupt}"],
     r"could not decode video .*corrupt\.mp4"),
    ("main-extend-empty-video", MAIN, [DIGITS, "--workdir={empty_workdir}", "--mode=sample",
                                       "--application=extend", "--input_video={empty}"],
     r"could not decode video .*empty\.mp4"),
    ("main-extend-missing-video", MAIN, [DIGITS, "--workdir={empty_workdir}", "--mode=sample",
                                         "--application=extend", "--input_video={missing}"],
     r"no such video file"),
    ("main-extend-wrong-size-video", MAIN, [DIGITS, "--workdir={empty_workdir}",
                                            "--mode=sample", "--application=extend",
                                            "--input_video={big}"], r"is 32x32 but"),
    ("main-super-resolve-short-video", MAIN, [DIGITS, "--workdir={empty_workdir}",
                                              "--mode=sample", "--application=super_resolve",
                                              "--input_video={short_8px}"],
     r"has 2 frames; need ≥"),
    # vdiff.main: the training-free interpolation method
    ("main-interpolation-train", MAIN, [INTERPOLATION, "--workdir={empty_workdir}"],
     r"training-free.*nothing to train"),
    ("main-interpolation-eval", MAIN, [INTERPOLATION, "--workdir={empty_workdir}",
                                       "--mode=eval"], r"training-free.*no run to evaluate"),
    ("main-interpolation-sampler", MAIN, [INTERPOLATION, "--workdir={empty_workdir}",
                                          "--mode=sample", "--application=interpolate",
                                          "--sampler=pc"], r"DDIM only.*--sampler=pc"),
    ("main-interpolation-application", MAIN, [INTERPOLATION, "--workdir={empty_workdir}",
                                               "--mode=sample", "--application=unconditional"],
     r"unknown application 'unconditional'.*application is 'interpolate'"),
    # evaluation CLIs
    ("fvd-missing", "vdiff.eval.fvd", ["{missing_dir}", "{ok}"], r"no such file or folder"),
    ("fvd-empty", "vdiff.eval.fvd", ["{empty}", "{ok}"], r"could not decode video"),
    ("fvd-corrupt-npz", "vdiff.eval.fvd", ["{corrupt_npz}", "{ok}"], r"could not read .*\.npz"),
    ("fvd-wrong-shape", "vdiff.eval.fvd", ["{wrong_ndim}", "{ok}"], r"\[N, T, H, W, C\]"),
    ("fvd-too-short", "vdiff.eval.fvd", ["{short}", "{ok}"], r"fewer than num_frames=16"),
    ("fvd-bad-flag", "vdiff.eval.fvd", ["{ok}", "{ok}", "--dtype=float64"],
     r"bad arguments: .*--dtype"),
    ("i3d-corrupt", "vdiff.eval.i3d", ["{corrupt}"], r"could not decode video"),
    ("nnf-missing", "vdiff.eval.nnf", ["{ok}", "{missing}"], r"no such video file"),
    ("digit-score-wrong-shape", "vdiff.eval.digit_score", ["{rgb}"], r"must be grey"),
    # data preparation, DreamPose, interpolation, PVDM export
    ("prepare-missing-source", "vdiff.data.prepare",
     ["ucf101", "--manual_dir={missing_dir}", "--data_dir={empty_workdir}"], r"does not exist"),
    ("prepare-bad-flag", "vdiff.data.prepare", ["ucf101", "--resolution=100",
                                                "--manual_dir={empty_workdir}"],
     r"--resolution must be 64, 128 or 256"),
    ("dreampose-missing-workdir", "vdiff.dreampose_cli",
     ["--workdir={missing_dir}", "--image={missing}", "--poses={missing}", "--out={missing}"],
     r"holds no DreamPose run"),
    ("interpolation-missing-weights", "vdiff.interpolation.cli",
     ["--sd={missing_dir}", "--image_a={missing}", "--image_b={missing}",
      "--out={missing_dir}"], r"Stable Diffusion folder not found"),
    ("pvdm-export-missing-workdir", "vdiff.methods.pvdm", ["{missing_dir}", "{missing_dir}"],
     r"holds no trained autoencoder"),
]


def _drive(cases_json: str, out_json: str) -> None:
    """Runs each case in this process as `python -m` would; records exit code and stderr."""
    import runpy
    import tempfile
    import traceback
    import warnings

    from absl import flags

    warnings.simplefilter("ignore")  # runpy's "found in sys.modules" for re-run modules
    results = {}
    for name, module, argv in json.load(open(cases_json)):
        saved_fd, saved_argv = os.dup(2), sys.argv
        with tempfile.TemporaryFile("w+") as err:
            os.dup2(err.fileno(), 2)
            try:
                sys.argv = [module, *argv]
                if module == MAIN:
                    import vdiff.main
                    flags.FLAGS.unparse_flags()
                    vdiff.main.run()
                else:
                    runpy.run_module(module, run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:  # noqa: BLE001 - what an uncaught error would do
                traceback.print_exc()
                code = 1
            finally:
                sys.stderr.flush()
                os.dup2(saved_fd, 2)
                os.close(saved_fd)
                sys.argv = saved_argv
            err.seek(0)
            results[name] = {"code": code, "stderr": err.read()}
    json.dump(results, open(out_json, "w"))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_errors")
    files = _files(root)
    cases = [(name, module, [a.format(**files) for a in argv])
             for name, module, argv, _ in CASES]
    (root / "cases.json").write_text(json.dumps(cases))
    code = (f"import sys; sys.path.insert(0, {REPO!r}); from tests.test_cli_errors import "
            f"_drive; _drive({str(root / 'cases.json')!r}, {str(root / 'out.json')!r})")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((root / "out.json").read_text())


def _assert_one_line(code: int, stderr: str, pattern: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, (code, stderr)
    assert len(lines) == 1 and lines[0].startswith("vdiff: "), stderr
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("name,pattern", [(c[0], c[3]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_user_error_is_one_line_exit_2(results, name, pattern):
    _assert_one_line(results[name]["code"], results[name]["stderr"], pattern)


def test_python_dash_m_prints_the_error_once(tmp_path):
    """The real entry point, end to end (fails in flag parsing: no JAX start-up)."""
    proc = subprocess.run([sys.executable, "-m", MAIN, "--config=configs/does_not_exist.py",
                           f"--workdir={tmp_path}"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    _assert_one_line(proc.returncode, proc.stderr, r"No such file .*does_not_exist\.py")
