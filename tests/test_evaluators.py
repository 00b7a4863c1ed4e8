"""Evaluators in the trainer and `--mode=eval`: FVD logged for a moving-digits run.

The plumbing is tested here with a cheap stand-in for the I3D network (I3D at 224×224 is
slow on a CPU compiled for fast compilation); the real network and FVD values are tested
in test_eval_metrics.py.
"""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from tests.helpers import load_config
from vdiff.errors import ConfigError
from vdiff.eval import evaluators, run_eval, sampling_evaluators


def _pixel_features(*, batch_size, mesh, dtype="float32"):
    """Stand-in feature extractor: 400 pixel values per clip (checks shapes like I3D)."""
    del batch_size, mesh, dtype

    def extract(videos, label=""):
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
    config.sample.num_samples = 0  # no periodic samples: the evaluators are the point
    # one sampling batch shape for the three sampling evaluators: one compile
    shared = dict(num_steps=2, batch_size=4)
    config.evals.fvd = ml_collections.ConfigDict(dict(num_videos=3, **shared))
    config.evals.digit_score = ml_collections.ConfigDict(dict(num_videos=2, **shared))
    config.evals.heldout_loss = ml_collections.ConfigDict(dict(num_batches=2, batch_size=4))
    config.evals.nearest_train = ml_collections.ConfigDict(dict(num_videos=2, num_fresh=4,
                                                                fresh_split="test[4:]",
                                                                **shared))
    trainer.train_and_evaluate(config, workdir)
    yield config, workdir
    patch.undo()


def test_training_logs_fvd_at_the_end(digits_run):
    _, workdir = digits_run
    lines = [json.loads(x) for x in open(os.path.join(workdir, "eval.jsonl"))]
    assert [x["step"] for x in lines] == [4]
    assert np.isfinite(lines[0]["fvd"]) and lines[0]["fvd"] > 0
    assert lines[0]["fvd_num_videos"] == 3
    assert 0.0 < lines[0]["digit_confidence"] <= 1.0 and lines[0]["digit_score"] >= 1.0
    assert lines[0]["digit_confidence_real"] > 0.5
    assert lines[0]["heldout_loss_gap"] == pytest.approx(
        lines[0]["heldout_loss_test"] - lines[0]["heldout_loss_train"])
    assert lines[0]["nn_train_videos"] == 64  # the whole tiny training split
    assert 0.0 < lines[0]["nn_train_rmse"] < 1.0 and lines[0]["nn_train_rmse_fresh"] > 0.0
    assert os.path.isdir(os.path.join(workdir, "tensorboard"))


def test_mode_eval_appends_a_result_that_reproduces_training_time_evaluation(digits_run):
    """`--mode=eval` restores the run's EMA params and appends a line at its step. Only the
    held-out loss runs here: it uses fixed batches and fixed noise, so it must reproduce the
    value logged during training (the sampling evaluators' plumbing is checked above, and
    compiling them again would cost minutes of CPU)."""
    config, workdir = digits_run
    config = config.copy_and_resolve_references()
    config.evals = ml_collections.ConfigDict({"heldout_loss": config.evals.heldout_loss})
    results = run_eval.evaluate_workdir(config, workdir)
    lines = [json.loads(x) for x in open(os.path.join(workdir, "eval.jsonl"))]
    assert len(lines) == 2 and lines[-1]["step"] == 4
    keys = sorted(k for k in lines[0] if k.startswith("heldout_loss"))
    assert len(keys) == 3 and sorted(results) == keys
    for key in keys:
        assert lines[-1][key] == pytest.approx(results[key])
        assert results[key] == pytest.approx(lines[0][key], rel=1e-5, abs=2e-6), key


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


class _ReplayMethod:
    """Stands in for a trained model: `sample` returns the first `num_samples` of fixed
    videos (in [−1, 1]); the evaluators jit it, so it runs once per batch size."""

    def __init__(self, videos_uint8):
        self.videos = np.asarray(videos_uint8, np.float32) / 127.5 - 1.0
        self.traced_batches = []

    def sample(self, params, rng, *, num_samples, num_steps, guidance_scale, gamma):
        del params, rng, num_steps, guidance_scale, gamma
        self.traced_batches.append(num_samples)
        return self.videos[:num_samples]

    def sample_labels(self, num):  # `vdiff.methods.base.Method`'s default: no classes
        return None


def test_digit_score_evaluator_scores_real_digits_like_real_and_scrambled_ones_lower():
    from vdiff.eval import digit_score
    from vdiff.train import sharding

    config = load_config("pvdm_ldm_digits", "runlocal")  # moving digits at 32×32
    config.sample.num_samples = 16  # one batch: all 16 clips
    mesh = sharding.make_mesh((-1, 1, 1))
    frames, _ = digit_score._frames(16, split="test", resolution=32, max_digits=2, seed=7)
    real = np.rint(frames).astype(np.uint8).reshape(16, -1, 32, 32, 1)
    scrambled = np.random.default_rng(0).permutation(real.reshape(-1)).reshape(real.shape)
    settings = evaluators.settings_for("digit_score", evaluators.DigitScoreEvaluator.DEFAULTS,
                                       dict(num_videos=16))
    rng = jax.random.key(0)
    good = evaluators.DigitScoreEvaluator(config, _ReplayMethod(real), mesh, settings)(None, rng)
    bad = evaluators.DigitScoreEvaluator(config, _ReplayMethod(scrambled), mesh, settings)(
        None, rng)
    # real clips from other seeds score like the evaluator's own real reference
    assert abs(good["digit_confidence"] - good["digit_confidence_real"]) < 0.08
    assert good["digit_score"] > 2 * bad["digit_score"]
    config.data.name = "ucf101"
    with pytest.raises(ConfigError, match="moving digits only"):
        evaluators.DigitScoreEvaluator(config, None, mesh, settings)


def test_sampled_clips_cycle_class_labels_across_batches():
    """A class-conditional method's labels run on from batch to batch (a per-batch restart
    would never ask for the classes past the batch size), and each batch's labels are the
    ones handed to `method.sample`."""
    import jax.numpy as jnp

    from vdiff.train import sharding

    class Fake:
        def sample_labels(self, n):
            return jnp.arange(n, dtype=jnp.int32) % 10

        def sample(self, params, rng, *, num_samples, labels=None, **kwargs):
            return jnp.broadcast_to(labels.astype(jnp.float32)[:, None, None, None, None] / 9,
                                    (num_samples, 1, 2, 2, 1)) * 2 - 1

    config = ml_collections.ConfigDict(dict(sample=dict(num_samples=8)))
    mesh = sharding.make_mesh((-1, 1, 1))
    settings = dict(num_steps=1, guidance_scale=0.0, gamma=0.0, batch_size=8)
    clips = sampling_evaluators.SampledClips("test", config, Fake(), mesh, settings)
    np.testing.assert_array_equal(clips.labels(20)[:20], np.arange(20) % 10)
    videos = clips(None, jax.random.key(0), 20)
    got = np.rint(videos[:, 0, 0, 0, 0] / 255 * 9)
    np.testing.assert_array_equal(got, np.arange(20) % 10)


def test_heldout_loss_is_the_methods_loss_on_fixed_batches_with_paired_noise(tmp_path):
    from vdiff.methods import get_method

    config = load_config("vdm_digits", "runlocal")
    config.data.data_dir = str(tmp_path)
    method = get_method(config)
    settings = evaluators.settings_for("heldout_loss", evaluators.HeldOutLossEvaluator.DEFAULTS,
                                       dict(num_batches=2, batch_size=4))
    ev = evaluators.HeldOutLossEvaluator(config, method, None, settings)
    params = jax.jit(method.init)(jax.random.key(0), ev.batches["train"][0])
    out = ev(params, jax.random.key(1))
    assert out == ev(params, jax.random.key(2))  # fixed noise: the call's key is unused
    keys = jax.random.split(jax.random.key(0), 2)
    for split in ("train", "test"):
        manual = np.mean([float(method.loss(params, b, k, train=False)[0])
                          for b, k in zip(ev.batches[split], keys)])
        assert out[f"heldout_loss_{split}"] == pytest.approx(manual, rel=1e-5)
    assert out["heldout_loss_test"] != out["heldout_loss_train"]  # different videos
    same = evaluators.HeldOutLossEvaluator(config, method, None,
                                           {**settings, "splits": ("train", "train")})
    assert same(params, None)["heldout_loss_gap"] == 0.0  # paired noise, same batches


def test_nearest_matches_brute_force_across_padded_blocks():
    from vdiff.eval import nearest_neighbours as nn

    rng = np.random.default_rng(0)
    refs = rng.integers(0, 256, (7, 3, 4, 4, 1), dtype=np.uint8)
    queries = np.concatenate([rng.integers(0, 256, (4, 3, 4, 4, 1), dtype=np.uint8),
                              refs[[6, 2]]])  # exact copies, one in the padded last block
    rmse, idx = nn.nearest(queries, refs, block=3)
    d = (queries.reshape(6, 1, -1) / 255.0 - refs.reshape(1, 7, -1) / 255.0)
    brute = np.sqrt(np.mean(d ** 2, axis=-1))
    np.testing.assert_allclose(rmse, brute.min(axis=1), atol=1e-5)
    np.testing.assert_array_equal(idx, brute.argmin(axis=1))
    assert list(idx[4:]) == [6, 2] and np.all(rmse[4:] < 1e-5)
    with pytest.raises(ValueError, match="one shape"):
        nn.nearest(queries[:, :2], refs)


def test_nearest_train_tells_copies_of_training_clips_from_new_clips(tmp_path):
    from vdiff.data import pipeline
    from vdiff.train import sharding

    config = load_config("vdm_digits", "runlocal")  # tiny: 64 training, 16 test videos
    config.data.data_dir = str(tmp_path)
    config.sample.num_samples = 3  # overridden by the evaluator's batch_size
    mesh = sharding.make_mesh((-1, 1, 1))
    train = pipeline.take_clips(config.data, 16, split="train", seed=3, random_flip=False)
    test = pipeline.take_clips(config.data, 16, split="test", seed=0, random_flip=False)
    settings = evaluators.settings_for("nearest_train", evaluators.NearestTrainEvaluator.DEFAULTS,
                                       dict(num_videos=16, num_fresh=16, batch_size=16))
    rng = jax.random.key(0)
    copier = _ReplayMethod(train)
    ev = evaluators.NearestTrainEvaluator(config, copier, mesh, {**settings, "batch_size": 5})
    copies = ev(None, rng)
    assert copier.traced_batches == [8]  # batch_size 5 rounded up to 8 data-parallel devices
    assert copies["nn_train_videos"] == 64
    assert copies["nn_train_rmse"] < 1e-6 and copies["nn_train_ratio"] < 1e-5
    assert copies["nn_train_close_fraction"] == 1.0
    # the fresh clips themselves, replayed: as far from the training set as fresh data
    fresh = evaluators.NearestTrainEvaluator(config, _ReplayMethod(test), mesh, settings)(None,
                                                                                          rng)
    assert fresh["nn_train_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert fresh["nn_train_close_fraction"] == pytest.approx(1 / 16)  # only the nearest one
    assert fresh["nn_train_rmse_fresh"] > 0.05
    wrong = _ReplayMethod(train[:, :2])
    with pytest.raises(ConfigError, match="shapes must match"):
        evaluators.NearestTrainEvaluator(config, wrong, mesh, settings)(None, rng)


def test_fvd_protocol_states_its_settings_and_scores_the_reference_split(digits_run, capsys):
    """`--mode=protocol`: the printed and saved protocol names the weights, step, sampler
    and reference; a generator that returns the reference clips themselves scores FVD 0,
    other clips score more."""
    from vdiff.data import pipeline
    from vdiff.eval import i3d, protocol

    config, workdir = digits_run
    patch = pytest.MonkeyPatch()
    patch.setattr(i3d, "feature_extractor", _pixel_features)
    try:
        result = protocol.run_protocol(config, workdir, {"num_samples": 3, "sampler": "ddim"})
        printed = capsys.readouterr().out
        p = result["protocol"]
        assert p["num_videos"] == 3 and p["step"] == 4 and p["sampler"] == "ddim"
        assert p["num_steps"] == 2  # config.evals.fvd's, over config.sample's
        assert p["weights"] == "EMA (decay 0.999)"
        assert p["reference"] == "moving_digits/tiny test split"
        assert "FVD16 protocol: 3 generated videos vs 3 held-out clips" in printed
        assert "ddim, 2 steps" in printed
        saved = json.load(open(os.path.join(workdir, protocol.RESULT_FILE)))
        assert saved["fvd16"] == pytest.approx(result["fvd16"]) and result["fvd16"] > 0

        def clips_of(seed):
            ref = protocol.reference_data(config.data)
            return lambda self, params, rng, n: pipeline.take_clips(ref, n, split="test",
                                                                    seed=seed)
        patch.setattr(sampling_evaluators.SampledClips, "__call__", clips_of(0))
        assert protocol.run_protocol(config, workdir, {"num_samples": 6})["fvd16"] == \
            pytest.approx(0.0, abs=1e-6)
        patch.setattr(sampling_evaluators.SampledClips, "__call__", clips_of(1))
        assert protocol.run_protocol(config, workdir, {"num_samples": 6})["fvd16"] > 1.0
    finally:
        patch.undo()


def test_fvd_protocol_reference_and_sampler_precedence():
    from vdiff.eval import protocol

    config = load_config("vdm_digits", "full,res=32")
    for builder, expected in (("default", "heldout_2k"), ("large", "heldout_2k"),
                              ("static", "static"), ("tiny", "tiny")):
        config.data.builder_config = builder
        assert protocol.reference_data(config.data).builder_config == expected
    s = protocol.sampler_settings(config, {})
    assert (s["sampler"], s["num_steps"], s["guidance_scale"]) == ("ancestral", 128, 2.0)
    s = protocol.sampler_settings(config, {"num_steps": 25, "sampler": "dpmpp_2m"})
    assert (s["sampler"], s["num_steps"]) == ("dpmpp_2m", 25)
    with pytest.raises(ConfigError, match="unknown sampler"):
        protocol.sampler_settings(config, {"sampler": "euler"})
    sinfusion = load_config("sinfusion_video", "runlocal")
    with pytest.raises(ConfigError, match="samples videos from noise"):
        protocol.run_protocol(sinfusion, "/nonexistent/run", {})
