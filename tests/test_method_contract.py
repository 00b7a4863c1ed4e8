"""Every method keeps the explicit contract of `vdiff.methods.base.Method`, and the runners
outside vdiff/methods/ neither probe methods (hasattr/getattr) nor branch on their names."""

from __future__ import annotations

import inspect
import pathlib
import re

import jax
import numpy as np
import pytest

from tests.helpers import REPO, load_config
from vdiff.errors import ConfigError
from vdiff.eval.evaluators import EVALUATORS
from vdiff.methods import METHODS, get_method, method_class, resolve, training_runs
from vdiff.methods.base import Method
from vdiff.methods import sinfusion as sf


def _classes() -> list[type[Method]]:
    """The registered classes and the concrete SinFusion roles behind their registry entry."""
    return [resolve(path) for path in METHODS.values()] + list(sf.ROLES.values())


@pytest.mark.parametrize("cls", _classes(), ids=lambda c: c.__name__)
def test_class_implements_the_contract(cls):
    assert issubclass(cls, Method)
    if cls is not sf.SinFusionModel:  # abstract on purpose: `create` picks a role class
        assert not inspect.isabstract(cls), cls.__abstractmethods__
    for name in ("example_batch", "init", "loss", "sample"):
        assert getattr(cls, name) is not getattr(Method, name)
    for name, path in cls.applications.items():
        assert callable(cls.application(name)), (name, path)
    if not cls.applications:
        assert cls.application_hint  # says where this method's outputs come from instead
    assert set(cls.evaluators) <= set(EVALUATORS)
    if cls.workdir_evaluation:
        assert callable(resolve(cls.workdir_evaluation))


def test_a_method_without_applications_cannot_be_defined():
    with pytest.raises(TypeError, match="applications"):
        type("NoApps", (Method,), {})


def test_unknown_application_is_one_config_error():
    from vdiff.methods.vdm import VDM, VDMSuperRes

    with pytest.raises(ConfigError, match="unknown application 'outpaint'.*'extend'"):
        VDM.application("outpaint")
    with pytest.raises(ConfigError, match="super-resolution stage"):
        VDMSuperRes.application("extend")


def test_sinfusion_applications_match_the_roles_they_restore():
    from vdiff.methods.sinfusion.sampling import ROLES_NEEDED

    assert set(sf.SinFusionModel.applications) == set(ROLES_NEEDED)


def test_runs_one_per_role_for_sinfusion_else_one():
    config = load_config("vdm_digits", "runlocal")
    assert training_runs(config, "/w") == [(config, "/w")]
    c = sf.sinfusion_defaults("predictor")
    c.sinfusion.role = "all"
    runs = training_runs(c, "/w")
    assert [(cfg.sinfusion.role, w) for cfg, w in runs] == [
        ("predictor", "/w/predictor"), ("projector", "/w/projector"),
        ("interpolator", "/w/interpolator")]
    assert method_class(c) is sf.SinFusionModel  # class hooks work before a role is chosen


def _sinfusion(role):
    c = sf.sinfusion_defaults(role)
    c.data.resolution, c.data.frame_size = 17, (17, 17)
    c.data.channels, c.data.num_frames = 1, 1 if role == "image" else 6
    c.model.width, c.model.depth = 8, 2
    return c


def _pvdm_ldm():
    from vdiff.methods.pvdm import PVDMAutoencoderStage, PVDMLatentStage
    from vdiff.train.sharding import strip_boxes

    ae_config = load_config("pvdm_ae_digits", "runlocal")
    ae = PVDMAutoencoderStage(ae_config)
    shapes = jax.eval_shape(ae.init, jax.random.key(0), ae.example_batch(1))
    ae_params = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), strip_boxes(shapes))
    config = load_config("pvdm_ldm_digits", "runlocal,ae=/unused")
    return PVDMLatentStage(config, autoencoder=(ae_config, ae_params["autoencoder"]))


def _dreampose(name, arg):
    return lambda: get_method(load_config(name, arg))


BUILDERS = {
    "vdm": lambda: get_method(load_config("vdm_digits", "runlocal")),
    "vdm_sr": lambda: get_method(load_config("vdm_digits_sr", "runlocal")),
    **{f"sinfusion_{r}": (lambda r=r: get_method(_sinfusion(r))) for r in sf.ROLES},
    "pvdm_ae": lambda: get_method(load_config("pvdm_ae_digits", "runlocal")),
    "pvdm_ldm": _pvdm_ldm,
    "dreampose": _dreampose("dreampose_dataset", "runlocal,micro"),
    "dreampose_vae": _dreampose("dreampose_vae", "pretrain,runlocal,micro"),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_method_builds_from_its_smallest_config_and_has_every_hook(name):
    method = BUILDERS[name]()
    assert isinstance(method, Method)
    batch = method.example_batch(2)
    assert batch and all(np.shape(v)[0] == 2 for v in batch.values())
    params = jax.eval_shape(method.init, jax.random.key(0), method.example_batch(1))
    assert jax.tree.leaves(params)
    # the optional hooks every runner calls unconditionally
    own = method.optimizer(method.config.train)
    assert own is None or len(own) == 2
    labels = method.sample_labels(3)
    assert labels is None or np.shape(labels) == (3,)
    assert isinstance(method.host_sample, bool)
    assert isinstance(method.evaluators, tuple)


# --------------------------------------------------------------------------------------------
# the runners never probe a method nor branch on its name (a source check)

PROBE = re.compile(r"\b(has|get)attr\(\s*(self\.)?(method|predictor|projector|interpolator)\b")
NAME_BRANCH = re.compile(r"\b(config|cfg)\.method\s*(==|!=|\bin\b|\bnot\s+in\b)")


def _sources(exclude: str) -> list[pathlib.Path]:
    root = pathlib.Path(REPO, "vdiff")
    return [p for p in sorted(root.rglob("*.py")) if not str(p).startswith(str(root / exclude))]


def test_no_method_probing_outside_the_base():
    hits = [f"{p}:{i}: {line.strip()}" for p in _sources("methods/base.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if PROBE.search(line)]
    assert not hits, "\n".join(hits)


def test_no_method_name_branches_outside_methods():
    hits = [f"{p}:{i}: {line.strip()}" for p in _sources("methods")
            for i, line in enumerate(p.read_text().splitlines(), 1) if NAME_BRANCH.search(line)]
    assert not hits, "\n".join(hits)


def test_the_source_checks_catch_what_they_look_for():
    assert PROBE.search('x = getattr(method, "context", 1)')
    assert PROBE.search('if hasattr(self.method, "optimizer"):')
    assert not PROBE.search('getattr(importlib.import_module(m), name)')
    assert NAME_BRANCH.search('if config.method == "sinfusion":')
    assert NAME_BRANCH.search('if config.method in ("pvdm_ae", "pvdm_ldm"):')
    assert NAME_BRANCH.search('if cfg.method not in ("dreampose",):')
    assert not NAME_BRANCH.search('_log("%s", config.method)')
