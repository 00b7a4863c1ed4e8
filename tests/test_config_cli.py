"""Configs and the CLI: overrides, typos and missing data give clear errors, not tracebacks."""

import os
import pathlib
import subprocess
import sys

import pytest

from tests.helpers import REPO, load_config
from vdiff import config_lib
from vdiff.errors import ConfigError


def _main(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "vdiff.main", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_parse_arg():
    a = config_lib.parse_arg("runlocal,steps=7", runlocal=False, steps=0, size="S")
    assert a.runlocal is True and a.steps == 7 and a.size == "S"
    with pytest.raises(ConfigError, match="unknown config argument 'sise'"):
        config_lib.parse_arg("sise=M", size="S")
    with pytest.raises(ConfigError, match="needs a value"):
        config_lib.parse_arg("steps", steps=0)


@pytest.mark.parametrize("name,arg", [("vdm_digits", None), ("vdm_digits", "runlocal"),
                                      ("vdm_digits", "full"), ("vdm_ucf", None),
                                      ("vdm_ucf", "runlocal")])
def test_configs_load_and_are_consistent(name, arg):
    c = load_config(name, arg)
    assert c.train.batch_size > 0 and c.data.resolution % 2 ** (len(c.model.channel_mults) - 1) == 0
    channels = [c.model.base_channels * m for m in c.model.channel_mults]
    assert all(ch % c.model.head_dim == 0 for ch in channels)


def test_every_shipped_config_names_known_evaluators_with_known_settings():
    """config.evals is checked only when a run builds its evaluators, often after hours of
    training: a typo in a shipped config must fail here instead."""
    from vdiff.eval import evaluators

    names = sorted(p.stem for p in pathlib.Path(REPO, "configs").glob("*.py")
                   if p.stem != "__init__")
    checked = 0
    for name in names:
        for arg in (None, "runlocal", "full", "digits=large"):
            try:
                c = load_config(name, arg)
            except ConfigError:  # the config has no such argument
                continue
            for ev, given in c.get("evals", {}).items():
                assert ev in evaluators.EVALUATORS, (name, arg, ev)
                evaluators.settings_for(ev, evaluators.EVALUATORS[ev].DEFAULTS, given)
                checked += 1
    assert checked >= 8


def test_ucf_config_matches_paper_setting():
    c = load_config("vdm_ucf")
    m = c.model
    assert (m.base_channels, tuple(m.channel_mults), m.num_res_blocks) == (256, (1, 2, 4, 8), 2)
    assert tuple(m.attn_resolutions) == (32, 16, 8) and m.head_dim == 64 and m.dropout == 0.1
    t = c.train
    assert (t.lr, t.b1, t.b2, t.batch_size, t.ema_decay) == (3e-4, 0.9, 0.99, 128, 0.9999)
    assert c.data.num_images_per_video == 8 and (c.data.num_frames, c.data.resolution) == (16, 64)
    d = c.diffusion
    assert (d.schedule, d.logsnr_min, d.logsnr_max, d.parameterization) == ("cosine", -20, 20, "v")


def test_override_typo_fails_loudly(tmp_path):
    r = _main(f"--config={REPO}/configs/vdm_digits.py:runlocal", f"--workdir={tmp_path}",
              "--config.train.batch_sz=8")
    assert r.returncode != 0
    assert "batch_sz" in r.stderr


def test_unknown_config_arg_fails_loudly(tmp_path):
    r = _main(f"--config={REPO}/configs/vdm_digits.py:runlcoal", f"--workdir={tmp_path}")
    assert r.returncode != 0
    assert "runlcoal" in r.stderr


def test_ucf_without_data_stops_at_once_with_instructions(tmp_path):
    r = _main(f"--config={REPO}/configs/vdm_ucf.py:runlocal", f"--workdir={tmp_path}",
              f"--config.data.data_dir={tmp_path}/nodata", timeout=120)
    assert r.returncode == 2, r.stderr
    assert "UCF-101" in r.stderr and "Traceback" not in r.stderr
    assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_missing_dataset_with_build_disabled(tmp_path):
    r = _main(f"--config={REPO}/configs/vdm_digits.py:runlocal", f"--workdir={tmp_path}",
              f"--config.data.data_dir={tmp_path}/nodata", "--config.data.build_if_missing=false")
    assert r.returncode == 2, r.stderr
    assert "DatasetNotFoundError" in r.stderr and "Traceback" not in r.stderr


def test_config_path_resolves_to_the_shipped_file_outside_a_checkout(tmp_path, monkeypatch):
    """`--config=configs/NAME.py[:ARGS]` from a folder without configs/: the copy shipped in
    an installed wheel (vdiff/configs/), else the checkout's configs/ (editable install)."""
    from vdiff import main
    # Installed from a wheel: site-packages/vdiff/configs/ next to site-packages/vdiff/main.py.
    site = tmp_path / "site"
    (site / "vdiff" / "configs").mkdir(parents=True)
    (site / "vdiff" / "configs" / "vdm_digits.py").write_text("")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    with monkeypatch.context() as m:
        m.setattr(main, "__file__", str(site / "vdiff" / "main.py"))
        got = main.resolve_config_arg("configs/vdm_digits.py:runlocal,steps=3", cwd=str(cwd))
    assert got == f"{site}/vdiff/configs/vdm_digits.py:runlocal,steps=3"
    # This checkout (or an editable install of it): the repository's configs/.
    got = main.resolve_config_arg("./configs/vdm_ucf.py", cwd=str(cwd))
    assert got == os.path.join(REPO, "configs", "vdm_ucf.py") and os.path.isfile(got)
    monkeypatch.chdir(cwd)  # the CLI resolves against the current folder
    argv = main._with_shipped_config(["vdiff", "--config", "configs/vdm_digits.py:runlocal",
                                      "--config.train.lr=0.1"])
    assert argv[2].startswith(os.path.join(REPO, "configs", "vdm_digits.py:"))
    assert argv[3] == "--config.train.lr=0.1"
    # Unchanged: a file that is there relative to the cwd, other paths, unknown names.
    for value in ("configs/vdm_digits.py:runlocal", f"{REPO}/configs/vdm_ucf.py",
                  "other/vdm_digits.py", "configs/does_not_exist.py"):
        assert main.resolve_config_arg(value, cwd=REPO) == value


def test_pyproject_ships_every_package_and_the_configs():
    """pyproject.toml lists its packages (to map configs/ to vdiff.configs): all of them."""
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        setuptools_table = tomllib.load(f)["tool"]["setuptools"]
    folders = {os.path.relpath(d, REPO).replace(os.sep, ".")
               for d, _, files in os.walk(os.path.join(REPO, "vdiff"))
               if "__pycache__" not in d and any(f.endswith(".py") for f in files)}
    assert set(setuptools_table["packages"]) == folders | {"vdiff.configs"}
    assert setuptools_table["package-dir"] == {"vdiff.configs": "configs"}
