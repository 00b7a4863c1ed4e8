"""The `interpolation` method (vdiff/methods/interpolation/): configs/interpolation.py holds
the CLI's defaults, the shared sampling options map onto the run's settings or are refused,
and the training-free method refuses training, evaluation and the training hooks. No model
is loaded here; tests/test_interpolation.py runs both entry points end to end."""

from __future__ import annotations

import dataclasses

import pytest

from tests.helpers import load_config
from vdiff.errors import ConfigError
from vdiff.interpolation import cli
from vdiff.interpolation.settings import Settings
from vdiff.methods import method_class
from vdiff.methods.interpolation import Interpolation, interpolate, run_settings
from vdiff.methods.interpolation.method import evaluate
from vdiff.sampling import SampleOptions

IMAGES = {"image_a": "a.png", "image_b": "b.png"}


def _settings(given=None, **interpolation):
    config = load_config("interpolation")
    config.interpolation.update({**IMAGES, **interpolation})
    opts = SampleOptions.resolve(config, {"application": "interpolate", **(given or {})})
    return run_settings(config, "/w", opts)


def test_config_defaults_are_the_cli_defaults():
    args = cli.build_parser().parse_args(["--image_a=a.png", "--image_b=b.png", "--out=/w"])
    assert _settings() == Settings(**vars(args))
    assert vars(args) == dataclasses.asdict(Settings(**IMAGES, out="/w"))
    config = load_config("interpolation")
    assert (config.sample.sampler, config.sample.num_steps) == ("ddim", Settings.ddim_steps)
    assert method_class(config) is Interpolation
    with pytest.raises(ConfigError, match="unknown config argument"):
        load_config("interpolation", "runlocal")


def test_shared_sampling_options_map_onto_the_run():
    s = _settings({"num_steps": 7, "seed": 3, "guidance_scale": 2.0, "num_frames": 9,
                   "output_dir": "/o"})
    assert (s.ddim_steps, s.seed, s.guidance_scale, s.num_frames, s.out) == (7, 3, 2.0, 9, "/o")
    s = _settings(num_frames=5)
    assert (s.num_frames, s.out) == (5, "/w")  # no --num_frames: the config's; the workdir
    assert _settings({"num_samples": 1}) == _settings()


@pytest.mark.parametrize("given,interpolation,pattern", [
    ({"sampler": "pc"}, {}, r"DDIM only.*--sampler=pc"),
    ({"label": 2}, {}, r"--label=2 has no meaning"),
    ({"input_video": "v.mp4"}, {}, r"--input_video=v.mp4 has no meaning"),
    ({"num_samples": 3}, {}, r"--num_samples=3 has no meaning"),
    ({"guidance_scale": 3.0}, {"dreampose_run": "/run"}, r"s_image and s_pose"),
])
def test_unsupported_sampling_options_are_refused(given, interpolation, pattern):
    with pytest.raises(ConfigError, match=pattern):
        _settings(given, **interpolation)


def test_training_free_method_refuses_training_and_evaluation():
    config = load_config("interpolation")
    with pytest.raises(ConfigError, match="training-free.*nothing to train"):
        Interpolation.runs(config, "/w")
    with pytest.raises(ConfigError, match="no run to evaluate"):
        evaluate(config, "/w")
    method = Interpolation.create(config)
    calls = [lambda: method.example_batch(1), lambda: method.init(None, {}),
             lambda: method.loss(None, {}, None),
             lambda: method.sample(None, None, num_samples=1)]
    for call in calls:
        with pytest.raises(ConfigError, match="training-free"):
            call()
    assert Interpolation.application("interpolate") is interpolate
    with pytest.raises(ConfigError, match="application is .interpolate."):
        Interpolation.application("unconditional")
