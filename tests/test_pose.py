"""Pose inputs: OpenPose JSON, interpolation, pose maps, DensePose IUV, windows, synthetic people."""

import json

import numpy as np
import pytest
from PIL import Image

from vdiff.data import pose, synthetic_people as sp
from vdiff.errors import ConfigError


def _person(k: int, conf: float, offset: float = 0.0) -> dict:
    kps = np.stack([np.arange(k) + offset, np.arange(k) * 2.0 + offset,
                    np.full(k, conf)], -1)
    return {"pose_keypoints_2d": kps.reshape(-1).tolist()}


# ----------------------------------------------------------------------------- JSON


def test_openpose_json_round_trip_picks_most_confident_person(tmp_path):
    path = tmp_path / "frame.json"
    path.write_text(json.dumps({"version": 1.3, "people": [
        _person(25, 0.3, offset=100.0), _person(25, 0.9, offset=5.0), _person(25, 0.5)]}))
    kps = pose.load_openpose_json(str(path))
    assert kps.shape == (25, 3) and kps.dtype == np.float32
    np.testing.assert_allclose(kps[:, 0], np.arange(25) + 5.0)
    np.testing.assert_allclose(kps[:, 1], np.arange(25) * 2.0 + 5.0)
    np.testing.assert_allclose(kps[:, 2], 0.9)

    path.write_text(json.dumps({"people": []}))
    empty = pose.load_openpose_json(str(path))
    assert empty.shape == (25, 3) and not empty.any()
    assert pose.load_openpose_json(str(path), num_keypoints=18).shape == (18, 3)


@pytest.mark.parametrize("content, why", [
    ("{not json", "not valid JSON"),
    (json.dumps({"persons": []}), "'people'"),
    (json.dumps({"people": [{"pose_keypoints_2d": [1.0, 2.0]}]}), "multiple of 3"),
    (json.dumps({"people": [{"face_keypoints_2d": [1.0, 2.0, 3.0]}]}), "pose_keypoints_2d"),
    (json.dumps([1, 2, 3]), "OpenPose JSON object"),
])
def test_malformed_openpose_json_names_file_and_problem(tmp_path, content, why):
    path = tmp_path / "broken_frame.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as e:
        pose.load_openpose_json(str(path))
    assert "broken_frame.json" in str(e.value) and why in str(e.value)


def test_keypoint_sequence_from_folder_and_from_list(tmp_path):
    folder = tmp_path / "seq"
    folder.mkdir()
    for t in (10, 2, 1):  # natural order: 1, 2, 10
        people = [] if t == 2 else [_person(18, 1.0, offset=float(t))]
        (folder / f"f_{t}.json").write_text(json.dumps({"people": people}))
    seq = pose.load_keypoint_sequence(str(folder))
    assert seq.shape == (3, 18, 3)
    np.testing.assert_allclose(seq[:, 0, 0], [1.0, 0.0, 10.0])
    np.testing.assert_allclose(seq[:, 0, 2], [1.0, 0.0, 1.0])

    one = tmp_path / "seq.json"
    frames = [np.full((18, 3), t, float).tolist() for t in range(4)]
    one.write_text(json.dumps(frames))
    np.testing.assert_allclose(pose.load_keypoint_sequence(str(one))[:, 3, 0], [0, 1, 2, 3])

    (folder / "f_3.json").write_text(json.dumps({"people": [_person(25, 1.0)]}))
    with pytest.raises(ConfigError, match="f_3.json"):
        pose.load_keypoint_sequence(str(folder))


# ----------------------------------------------------------------------------- geometry


def test_normalize_keypoints_maps_pixel_centres():
    kps = np.array([[0.0, 0.0, 1.0], [63.0, 31.0, 1.0], [5.0, 5.0, 0.0]], np.float32)
    out = pose.normalize_keypoints(kps, (32, 64), (64, 128))
    np.testing.assert_allclose(out[:2, :2], [[0.5, 0.5], [126.5, 62.5]])
    np.testing.assert_array_equal(out[2], [0.0, 0.0, 0.0])  # undetected stays 0, 0, 0
    np.testing.assert_allclose(out[:, 2], kps[:, 2])


def test_interpolation_endpoints_midpoints_and_invisible_joints():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.uniform(0, 64, (18, 2)), np.full((18, 1), 0.8)], -1)
    b = np.concatenate([rng.uniform(0, 64, (18, 2)), np.full((18, 1), 0.6)], -1)
    a[3, 2] = 0.0   # invisible in a
    b[7, 2] = 0.01  # below threshold in b
    out = pose.interpolate_keypoints(a, b, [0.0, 0.5, 1.0])
    assert out.shape == (3, 18, 3)
    vis = np.ones(18, bool)
    vis[[3, 7]] = False
    np.testing.assert_allclose(out[0, vis], a[vis], rtol=1e-6)
    np.testing.assert_allclose(out[2, vis], b[vis], rtol=1e-6)
    np.testing.assert_allclose(out[1, vis], (a[vis] + b[vis]) / 2, rtol=1e-6)
    assert (out[:, ~vis, 2] == 0).all()


# ----------------------------------------------------------------------------- windows


def test_pose_window_uses_distinct_clamped_frames():
    t = 7
    poses = np.arange(t, dtype=np.float32)[:, None, None, None] * np.ones((t, 3, 4, 2))
    frames_of = lambda win: win[0, 0, ::2]  # noqa: E731 (channel 0 of each window slot)
    np.testing.assert_array_equal(frames_of(pose.pose_window(poses, 0)), [0, 0, 0, 1, 2])
    np.testing.assert_array_equal(frames_of(pose.pose_window(poses, t - 1)),
                                  [t - 3, t - 2, t - 1, t - 1, t - 1])
    np.testing.assert_array_equal(frames_of(pose.pose_window(poses, 3)), [1, 2, 3, 4, 5])
    assert pose.pose_window(poses, 3).shape == (3, 4, 10)
    np.testing.assert_array_equal(pose.pose_window_indices(t, 1, 2), [0, 0, 1, 2, 3])
    assert pose.pose_windows(poses).shape == (t, 3, 4, 10)


def test_pose_window_on_jax_arrays_under_jit():
    import jax
    import jax.numpy as jnp

    t = 6
    poses = jnp.arange(t, dtype=jnp.float32)[:, None, None, None] * jnp.ones((t, 2, 2, 2))
    win = jax.jit(lambda p, i: pose.pose_window(p, i))(poses, jnp.int32(5))
    np.testing.assert_array_equal(np.asarray(win[0, 0, ::2]), [3, 4, 5, 5, 5])
    np.testing.assert_array_equal(np.asarray(pose.pose_window(poses, 2)[0, 0, ::2]),
                                  [0, 1, 2, 3, 4])


# ----------------------------------------------------------------------------- pose maps


def _horizontal_arm(size: int = 64) -> np.ndarray:
    kps = np.zeros((18, 3), np.float32)
    kps[3] = (10.0, 32.0, 1.0)  # RElbow
    kps[4] = (50.0, 32.0, 1.0)  # RWrist: limb (3, 4), the only one with both joints
    return kps


def test_render_pose_uv_single_limb():
    uv = pose.render_pose_uv(_horizontal_arm(), 64)
    assert uv.shape == (64, 64, 2) and uv.dtype == np.float32
    assert uv.min() >= -1.0 and uv.max() <= 1.0
    covered = uv[..., 0] > -1.0
    # Only pixels near the segment are covered; all carry the forearm's part code.
    assert covered[32, 10:51].all() and not covered[:20].any() and not covered[45:].any()
    limb = pose.COCO18_LIMBS.index((3, 4))
    np.testing.assert_allclose(uv[covered, 0], pose.PART_CODES[limb])
    # Background exactly -1 in both channels.
    assert (uv[~covered] == -1.0).all()
    # Along the limb, channel 1 runs from -1 to 1, strictly increasing between the joints.
    along = uv[32, 10:51, 1]
    assert along[0] == pytest.approx(-1.0) and along[-1] == pytest.approx(1.0)
    assert (np.diff(along) > 0).all()
    assert (np.diff(uv[32][covered[32], 1]) >= 0).all()
    # Thickness scales with the image: wider limb at 128 pixels.
    big = pose.render_pose_uv(pose.normalize_keypoints(_horizontal_arm(), 64, 128), 128)
    assert (big[..., 0] > -1).sum() > 3 * covered.sum()
    # BODY_25 input gives the same map (converted to COCO-18), and batches work.
    b25 = np.zeros((25, 3), np.float32)
    b25[3], b25[4] = _horizontal_arm()[3], _horizontal_arm()[4]
    np.testing.assert_array_equal(pose.render_pose_uv(b25, 64), uv)
    assert pose.render_pose_uv(np.stack([_horizontal_arm()] * 3), 64).shape == (3, 64, 64, 2)
    # Nothing visible: all background.
    assert (pose.render_pose_uv(np.zeros((18, 3)), 16) == -1).all()


def test_render_pose_uv_distinct_part_codes():
    kps = sp.random_motion(1, seed=3, size=96)[0]
    codes = np.unique(pose.render_pose_uv(kps, 96)[..., 0])
    assert len(codes) >= 12 and codes[0] == -1.0
    assert len(np.unique(pose.PART_CODES)) == len(pose.COCO18_LIMBS)
    assert pose.PART_CODES.min() > -1.0 and pose.PART_CODES.max() == 1.0


def test_render_openpose_rgb_range_and_colours():
    img = pose.render_openpose_rgb(_horizontal_arm(), 64)
    assert img.shape == (64, 64, 3) and img.dtype == np.float32
    assert img.min() >= -1.0 and img.max() <= 1.0
    assert (img[0] == -1.0).all()                       # black background
    # Limb (3, 4) is ControlNet's 4th limb, hue 60 degrees (yellow) at 60%.
    np.testing.assert_allclose(img[32, 30], np.array([0.6, 0.6, 0.0]) * 2 - 1, atol=1e-6)
    full = pose.render_openpose_rgb(sp.random_motion(1, seed=0, size=64)[0], 64)
    assert full.max() == 1.0 and (full > -1).any(-1).mean() > 0.02


# ----------------------------------------------------------------------------- DensePose


def test_load_densepose_iuv(tmp_path):
    iuv = np.zeros((8, 8, 3), np.uint8)
    iuv[2:6, 2:6] = (3, 255, 0)       # part 3, U = 255, V = 0
    iuv[6, 6] = (0, 200, 200)          # background: U, V ignored
    Image.fromarray(iuv).save(tmp_path / "f1.png")
    Image.fromarray(iuv[..., ::-1].copy()).save(tmp_path / "f2_bgr.png")
    out = pose.load_densepose_iuv([tmp_path / "f1.png"], 16)
    assert out.shape == (1, 16, 16, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 4:12, 4:12, 0], 1.0)
    np.testing.assert_array_equal(out[0, 4:12, 4:12, 1], -1.0)
    assert (out[0, :4] == -1).all() and (out[0, 12:] == -1).all()
    bgr = pose.load_densepose_iuv([tmp_path / "f2_bgr.png"], 16, channel_order="VUI")
    np.testing.assert_array_equal(bgr, out)

    Image.fromarray(iuv[..., 0]).save(tmp_path / "gray.png")
    with pytest.raises(ConfigError, match="gray.png.*1 channel"):
        pose.load_densepose_iuv([tmp_path / "gray.png"], 16)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ConfigError, match="junk.png"):
        pose.load_densepose_iuv([tmp_path / "junk.png"], 16)


# ----------------------------------------------------------------------------- synthetic people


def test_synthetic_people_deterministic_moving_and_recognisable():
    a = sp.make_triples(2, 6, 48, seed=0)
    b = sp.make_triples(2, 6, 48, seed=0)
    c = sp.make_triples(2, 6, 48, seed=1)
    assert set(a) >= {"subject_image", "poses", "frames"}
    assert a["subject_image"].shape == (2, 48, 48, 3)
    assert a["poses"].shape == (2, 6, 48, 48, 2) and a["frames"].shape == (2, 6, 48, 48, 3)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        assert not np.array_equal(a[key], c[key])
        assert a[key].dtype == np.float32
    for key in ("subject_image", "poses", "frames"):
        assert a[key].min() >= -1.0 and a[key].max() <= 1.0
    np.testing.assert_array_equal(a["subject_image"], a["frames"][:, 0])
    # The figure moves: consecutive frames and poses differ.
    assert all(not np.array_equal(a["frames"][0, t], a["frames"][0, t + 1]) for t in range(5))
    assert not np.array_equal(a["poses"][0, 0], a["poses"][0, 5])
    # In frame: all keypoints inside the image.
    kps = a["keypoints"]
    assert (kps[..., :2] >= 0).all() and (kps[..., :2] <= 47).all()


def test_synthetic_appearance_stays_across_frames():
    app = sp.random_appearance(5)
    assert app == sp.random_appearance(5) and app != sp.random_appearance(6)
    kps = sp.random_motion(8, seed=2, size=64)
    video = sp.render_person(kps, 64, app)
    shirt = np.asarray(app.shirt, np.float32) * 2 - 1
    is_shirt = np.abs(video - shirt).max(-1) < 1e-4                     # [T, H, W]
    counts = is_shirt.sum((1, 2))
    assert counts.min() > 30 and counts.max() < 1.6 * counts.min()
    # Mean colour of the shirt pixels is the shirt colour in every frame.
    for t in range(8):
        np.testing.assert_allclose(video[t][is_shirt[t]].mean(0), shirt, atol=1e-4)
    # The torso centre is shirt-coloured in every frame.
    hips = (kps[:, 8, :2] + kps[:, 11, :2]) / 2
    centre = np.rint((kps[:, 1, :2] + hips) / 2).astype(int)
    np.testing.assert_allclose(video[np.arange(8), centre[:, 1], centre[:, 0]],
                               np.broadcast_to(shirt, (8, 3)), atol=1e-4)
    # The motion itself is smooth: joints move little from frame to frame.
    step = np.abs(np.diff(kps[..., :2], axis=0)).max()
    assert 0 < step < 8
