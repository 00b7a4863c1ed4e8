"""Evaluators in the trainer and `--mode=eval`: FVD logged for a moving-digits run.

The plumbing is tested here with a cheap stand-in for the I3D network (I3D at 224×224 is
slow on a CPU compiled for fast compilation); the real network and FVD values are tested
in test_eval_metrics.py.
"""

import json
import os

import ml_collections
import numpy as np
import pytest

from tests.helpers import load_config
from vdiff.errors import ConfigError
from vdiff.eval import evaluators, run_eval


def _pixel_features(*, batch_size, mesh, dtype="float32"):
    """Stand-in feature extractor: 400 pixel values per clip (checks shapes like I3D)."""
    del batch_size, mesh, dtype

    def extract(videos):
        videos = np.asarray(videos)
        assert videos.ndim == 5 and videos.shape[1] >= 16 and videos.shape[-1] == 3
        return videos.reshape(len(videos), -1)[:, :400].astype(np.float32)

    return extract


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from vdiff.eval import i3d
    from vdiff.train import trainer

    patch = pytest.MonkeyPatch()
    patch.setattr(i3d, "feature_extractor", _pixel_features)

    workdir = str(tmp_path_factory.mktemp("fvd_run"))
    config = load_config("vdm_digits", "runlocal")
    config.data.data_dir = str(tmp_path_factory.mktemp("data"))
    config.train.num_steps, config.train.checkpoint_every = 4, 4
    config.evals.fvd = ml_collections.ConfigDict(dict(num_videos=3, num_steps=2))
    trainer.train_and_evaluate(config, workdir)
    yield config, workdir
    patch.undo()


def test_training_logs_fvd_at_the_end(digits_run):
    _, workdir = digits_run
    lines = [json.loads(x) for x in open(os.path.join(workdir, "eval.jsonl"))]
    assert [x["step"] for x in lines] == [4]
    assert np.isfinite(lines[0]["fvd"]) and lines[0]["fvd"] > 0
    assert lines[0]["fvd_num_videos"] == 3
    assert os.path.isdir(os.path.join(workdir, "tensorboard"))


def test_mode_eval_appends_a_result(digits_run):
    config, workdir = digits_run
    results = run_eval.evaluate_workdir(config, workdir)
    lines = [json.loads(x) for x in open(os.path.join(workdir, "eval.jsonl"))]
    assert len(lines) == 2 and lines[-1]["step"] == 4
    assert results["fvd"] == pytest.approx(lines[-1]["fvd"])


def test_short_clips_are_stretched_to_16_frames_and_grey_to_rgb():
    clips = np.arange(2 * 4 * 2 * 2, dtype=np.uint8).reshape(2, 4, 2, 2, 1)
    out = evaluators.to_i3d_clips(clips)
    assert out.shape == (2, 16, 2, 2, 3)
    np.testing.assert_array_equal(out[:, ::4, ..., 0], clips[..., 0])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_unknown_evaluator_or_setting_is_a_config_error():
    config = load_config("vdm_digits", "runlocal")
    config.evals.fdv = ml_collections.ConfigDict(dict(num_videos=3))
    with pytest.raises(ConfigError, match="unknown evaluator config.evals.fdv"):
        evaluators.build_evaluators(config, None, None)
    config = load_config("vdm_digits", "runlocal")
    config.evals.fvd = ml_collections.ConfigDict(dict(num_vidoes=3))
    with pytest.raises(ConfigError, match="num_vidoes"):
        evaluators.build_evaluators(config, None, None)
