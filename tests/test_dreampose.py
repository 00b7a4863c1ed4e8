"""DreamPose: adapter/pose-channel invariants, guidance algebra, dropout, pose windows, the
four training stages (one step each, which params move) and the CLI, on the micro model."""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdiff.data import pose as pose_lib
from vdiff.diffusion import guidance
from vdiff.errors import ConfigError
from vdiff.models import dreampose as dp
from vdiff.models.sd.unet import UNet2DConditionModel, widen_input_channels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name, arg):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", name))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(arg)


def test_adapter_starts_as_clip_only_context():
    rng = np.random.default_rng(0)
    clip = jnp.asarray(rng.normal(size=(2, 17, 8)), jnp.float32)
    lat = jnp.asarray(rng.normal(size=(2, 8, 8, 4)), jnp.float32)
    adapter = dp.ImageConditionAdapter()
    params = adapter.init(jax.random.key(0), clip, lat)["params"]
    np.testing.assert_array_equal(np.asarray(adapter.apply({"params": params}, clip, lat)),
                                  np.asarray(clip))
    # ... and the VAE branch is wired in: a non-zero VAE block changes the context.
    k = params["mix"]["kernel"].at[8:].set(0.1)
    out = adapter.apply({"params": {**params, "mix": {**params["mix"], "kernel": k}}}, clip, lat)
    assert float(jnp.abs(out - clip).max()) > 1e-3
    tokens = dp.pool_latent_to_tokens(lat, 17)   # CLS = global mean, 4×4 patch grid
    np.testing.assert_allclose(tokens[:, 0], lat.mean((1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tokens[:, 1], lat[:, :2, :2].mean((1, 2)), rtol=1e-5, atol=1e-6)


def test_zero_init_pose_channels_leave_unet_unchanged():
    cfg = dp.tiny_configs("micro")["unet"]
    unet = UNet2DConditionModel(cfg)
    z = jax.random.normal(jax.random.key(1), (1, 8, 8, 4))
    ctx = jax.random.normal(jax.random.key(2), (1, 5, 8))
    t = jnp.array([500.0])
    params = unet.init(jax.random.key(0), z, t, ctx)["params"]
    wide = widen_input_channels(params, dp.POSE_CHANNELS)
    pose = jax.random.normal(jax.random.key(3), (1, 8, 8, dp.POSE_CHANNELS))
    apply = jax.jit(unet.apply)
    np.testing.assert_allclose(apply({"params": wide}, jnp.concatenate([z, pose], -1), t, ctx),
                               apply({"params": params}, z, t, ctx), rtol=1e-5, atol=1e-5)


def test_dual_guidance_algebra():
    rng = np.random.default_rng(0)
    e0, ei, eip = (jnp.asarray(rng.normal(size=(2, 3)), jnp.float32) for _ in range(3))
    s_i, s_p = 2.5, 4.0
    want = e0 + s_i * (ei - e0) + s_p * (eip - ei)
    np.testing.assert_allclose(dp.dual_guidance_eps(e0, ei, eip, s_image=s_i, s_pose=s_p),
                               want, rtol=1e-6)
    np.testing.assert_allclose(guidance.multi_condition_eps([e0, ei, eip], [1.0, 1.0]), eip,
                               rtol=1e-6)
    np.testing.assert_allclose(dp.dual_guidance_eps(e0, ei, eip, s_image=0.0, s_pose=0.0), e0)
    # guided_eps feeds (∅,∅), (I,∅), (I,p) in that order: check with a stub network.
    model = dp.DreamPoseModel.__new__(dp.DreamPoseModel)
    model.eps = lambda params, z, logsnr, ctx, pose: (  # noqa: E731
        ctx.sum((1, 2))[:, None, None, None] + 10 * pose.sum((1, 2, 3))[:, None, None, None]
        + 0 * z)
    z = jnp.zeros((1, 2, 2, 4))
    ctx, pose = jnp.ones((1, 3, 2)), jnp.ones((1, 2, 2, 10))
    out = dp.DreamPoseModel.guided_eps(model, None, z, jnp.zeros(()), ctx, pose,
                                       s_image=s_i, s_pose=s_p)
    np.testing.assert_allclose(out, 0 + s_i * (6 - 0) + s_p * (6 + 400 - 6))


def test_pose_window_at_sequence_ends():
    poses = np.arange(7, dtype=np.float32)[:, None, None, None] * np.ones((7, 2, 2, 2))
    frames = lambda w: w[0, 0, ::2].tolist()  # noqa: E731  (channel 0 of each window frame)
    assert frames(pose_lib.pose_window(poses, 0)) == [0, 0, 0, 1, 2]
    assert frames(pose_lib.pose_window(poses, 1)) == [0, 0, 1, 2, 3]
    assert frames(pose_lib.pose_window(poses, 3)) == [1, 2, 3, 4, 5]
    assert frames(pose_lib.pose_window(poses, 6)) == [4, 5, 6, 6, 6]
    assert pose_lib.pose_window(poses, 3).shape == (2, 2, dp.POSE_CHANNELS)


def test_condition_dropout_masks():
    keep_i, keep_p = dp.condition_dropout(jax.random.key(0), 200_000, p_image=0.1, p_pose=0.2,
                                          p_both=0.05)
    keep_i, keep_p = np.asarray(keep_i), np.asarray(keep_p)
    np.testing.assert_allclose((~keep_i & ~keep_p).mean(), 0.05, atol=0.005)
    np.testing.assert_allclose((~keep_i & keep_p).mean(), 0.10, atol=0.005)
    np.testing.assert_allclose((keep_i & ~keep_p).mean(), 0.20, atol=0.005)
    none = dp.condition_dropout(jax.random.key(0), 8, p_image=0, p_pose=0, p_both=0)
    assert all(bool(np.all(m)) for m in none)
    with pytest.raises(ConfigError):
        dp.condition_dropout(jax.random.key(0), 8, p_image=0.6, p_pose=0.6, p_both=0.0)


def _changed(a, b):
    return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    from vdiff.train import trainer

    root = tmp_path_factory.mktemp("dreampose")
    runs, params = {}, {}
    for name, config, arg in [
            ("base", "dreampose_vae.py", "pretrain,runlocal,micro,steps=1"),
            ("dataset", "dreampose_dataset.py", "base_vae={base},runlocal,micro,steps=1"),
            ("subject", "dreampose_subject.py", "init_from={dataset},runlocal,micro,steps=1"),
            ("vae", "dreampose_vae.py", "init_from={subject},runlocal,micro,steps=1")]:
        runs[name] = str(root / name)
        c = _config(config, arg.format(**runs))
        c.sample.num_samples = 0  # no end-of-run animation in the tests
        state = trainer.train_and_evaluate(c, runs[name])
        params[name] = jax.tree.map(np.asarray, state.params)  # = the checkpoint (no EMA)
    return runs, params


def test_each_stage_trains_only_its_params(stages):
    runs, params = stages
    base, ds, sub, vae = (params[k] for k in ("base", "dataset", "subject", "vae"))
    # dataset stage: VAE from the pretrain run, frozen; CLIP frozen; UNet + adapter train.
    assert not _changed(ds["vae"], base["vae"])
    assert set(ds) == {"unet", "adapter", "clip", "vae"}
    assert _changed(sub["unet"], ds["unet"]) and _changed(sub["adapter"], ds["adapter"])
    assert not _changed(sub["clip"], ds["clip"]) and not _changed(sub["vae"], ds["vae"])
    # VAE stage: only the decoder side moves.
    assert _changed(vae["vae"]["decoder"], sub["vae"]["decoder"])
    assert not _changed(vae["vae"]["encoder"], sub["vae"]["encoder"])
    assert not _changed(vae["vae"]["quant_conv"], sub["vae"]["quant_conv"])
    for k in ("unet", "adapter", "clip"):
        assert not _changed(vae[k], sub[k])
    lines = open(os.path.join(runs["dataset"], "metrics.jsonl")).read().splitlines()
    assert np.isfinite(json.loads(lines[-1])["loss"])


def test_cli_end_to_end(stages, tmp_path):
    runs, _ = stages
    from PIL import Image

    from vdiff import dreampose_cli
    from vdiff.data import synthetic_people as sp

    kps = sp.random_motion(3, seed=5, size=32)
    (tmp_path / "poses.json").write_text(json.dumps(kps.tolist()))
    img = ((sp.render_person(kps[0], 32, sp.random_appearance(1)) + 1) * 127.5).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "photo.png")
    args = ["--workdir", runs["vae"], "--image", str(tmp_path / "photo.png"),
            "--poses", str(tmp_path / "poses.json"), "--num_steps", "2", "--shared_noise"]
    # Wrong size: a clear error, exit code 2.
    assert dreampose_cli.main(args + ["--out", str(tmp_path / "x.mp4")]) == 2
    assert dreampose_cli.main(["--workdir", str(tmp_path / "missing"), "--image", "a.png",
                               "--poses", "p.json", "--out", "o.mp4"]) == 2
    out = dreampose_cli.run(runs["vae"], str(tmp_path / "photo.png"),
                            str(tmp_path / "poses.json"), str(tmp_path / "video.mp4"),
                            num_steps=2, resize=True, shared_noise=True)
    from vdiff.data import video_io
    video = video_io.read_video(out)
    assert video.shape[0] == 3 and video.shape[1:3] == (16, 16)


def test_animate_frames_do_not_depend_on_the_chunking(stages):
    """Each frame's sample depends only on its own pose window and RNG, not on which
    frames share a compiled chunk (a frame-batch of 3 equals three batches of 1)."""
    from vdiff.data import dreampose_data
    from vdiff.methods import dreampose as method_lib

    runs, _ = stages
    config, params = method_lib.load_run(runs["vae"])
    model = method_lib.build_model(config)
    r = int(config.data.resolution)
    d = dreampose_data.synthetic(1, 3, r, 0)
    kw = dict(num_steps=2, sampler="ddim", shared_noise=False)
    whole = method_lib.animate(model, params, d["subject_image"][0], d["poses"][0],
                               jax.random.key(1), frame_batch=3, **kw)
    single = method_lib.animate(model, params, d["subject_image"][0], d["poses"][0],
                                jax.random.key(1), frame_batch=1, **kw)
    assert whole.shape == (3, r, r, 3) and np.all(np.isfinite(whole))
    np.testing.assert_allclose(whole, single, atol=1e-5)
