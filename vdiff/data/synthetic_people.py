"""Synthetic people: seeded stick-figure "persons" following smooth keypoint motions.

For the DreamPose demo, where no real dance videos or DensePose model are available: a
subject is an ``Appearance`` (skin, hair, shirt, trousers and shoe colours, limb thickness,
head size, a textured background) and a motion (COCO-18 keypoints from a 2D skeleton
whose joint angles are smooth sinusoids of time, mixing walking, waving and bending).
``render_person`` draws the person in a given pose, so the identity stays recognisable
while the pose changes; ``make_triples`` gives DreamPose's training triples
(subject photo, pose map, target frame). Everything is a pure function of its seed.
Images are float32 in [-1, 1]; keypoints follow ``vdiff.data.pose``'s conventions.
"""

from __future__ import annotations

import colorsys
import dataclasses
from typing import Sequence

import numpy as np

from vdiff.data import pose as pose_lib

# COCO-18 joint indices.
_NOSE, _NECK, _RSHO, _RELB, _RWRI, _LSHO, _LELB, _LWRI = range(8)
_RHIP, _RKNE, _RANK, _LHIP, _LKNE, _LANK, _REYE, _LEYE, _REAR, _LEAR = range(8, 18)

Color = tuple[float, float, float]


def _seed_rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]))


# ----------------------------------------------------------------------------- motion


def _direction(angle: np.ndarray) -> np.ndarray:
    """[..., 2] unit (x, y) vectors; angle 0 points down the image, positive turns to +x."""
    return np.stack([np.sin(angle), np.cos(angle)], -1)


def random_motion(num_frames: int, seed: int, size: int | Sequence[int] = 64) -> np.ndarray:
    """[T, 18, 3] float32 COCO-18 keypoints of a figure moving smoothly, all in frame.

    A 2D skeleton with seeded bone lengths; its joint angles (torso lean, hip and knee,
    shoulder and elbow, head tilt) and a sway of the whole body are sinusoids of time with
    seeded amplitudes, periods (12 to 36 frames) and phases, mixing three motions with
    seeded weights: walking (legs and arms swinging in opposition, bobbing), waving (the
    right arm raised, the forearm rocking) and bending (the torso leaning). The whole
    sequence is then scaled and placed, with one transform, to fit in the image with a
    margin. All joints have confidence 1.
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    h, w = pose_lib.size_hw(size)
    rng = _seed_rng(seed, 0x6D6F76)
    t = np.arange(num_frames, dtype=np.float64)

    def wave(amplitude: float, period_lo: float = 12.0, period_hi: float = 36.0):
        period = rng.uniform(period_lo, period_hi)
        return amplitude * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))

    # Bone lengths in units of the figure's height, jittered per subject.
    j = lambda v: v * rng.uniform(0.9, 1.1)  # noqa: E731
    torso, neck, shoulder, hip = j(0.30), j(0.12), j(0.10), j(0.065)
    upper_arm, forearm, thigh, shin = j(0.16), j(0.15), j(0.22), j(0.21)
    eye_dx, eye_dy, ear_dx, ear_dy = 0.025, 0.025, 0.05, 0.012

    # Motion mix: one dominant motion, the others weaker.
    weights = rng.uniform(0.15, 0.6, 3)
    weights[rng.integers(3)] = 1.0
    walk, waving, bend = weights

    # Walking: one gait period shared by legs and arms.
    gait_period = rng.uniform(12.0, 28.0)
    phase = 2 * np.pi * t / gait_period + rng.uniform(0, 2 * np.pi)
    swing = walk * 0.45 * np.sin(phase)
    r_thigh = -0.08 + swing
    l_thigh = 0.08 - swing
    r_knee = walk * 0.3 * (1 + np.sin(phase + 1.3))         # shin bends back, >= 0
    l_knee = walk * 0.3 * (1 - np.sin(phase + 1.3))
    bob = walk * 0.015 * np.cos(2 * phase)
    sway = walk * wave(0.12, 24.0, 48.0)

    lean = bend * wave(0.45)
    head_tilt = wave(0.12)

    # Arms: hanging slightly out, swinging against the legs, right arm waving.
    r_upper_walk = -0.25 - walk * 0.35 * np.sin(phase)
    l_upper = 0.25 + walk * 0.35 * np.sin(phase) + wave(0.1)
    r_upper = (1 - waving) * r_upper_walk + waving * (-2.4 + wave(0.2))
    r_elbow = (1 - waving) * (-0.25 + wave(0.15)) + waving * (-0.6 + wave(0.7, 8.0, 16.0))
    l_elbow = 0.25 + wave(0.2)

    # Forward kinematics in figure units: mid-hip at the origin, y down.
    root = np.stack([sway, bob], -1)                          # [T, 2]
    up = _direction(np.pi + lean)                             # [T, 2]
    right = np.stack([-up[:, 1], up[:, 0]], -1)               # perpendicular: +x at lean 0
    k = np.zeros((num_frames, 18, 2))
    k[:, _NECK] = root + torso * up
    head_dir = _direction(np.pi + lean + head_tilt)
    head_right = np.stack([-head_dir[:, 1], head_dir[:, 0]], -1)
    k[:, _NOSE] = k[:, _NECK] + neck * head_dir
    for idx, side, dy, dx in ((_REYE, -1, eye_dy, eye_dx), (_LEYE, 1, eye_dy, eye_dx),
                              (_REAR, -1, ear_dy, ear_dx), (_LEAR, 1, ear_dy, ear_dx)):
        k[:, idx] = k[:, _NOSE] + side * dx * head_right + dy * head_dir
    # The person faces the camera: their right side is on the image's left.
    k[:, _RSHO] = k[:, _NECK] - shoulder * right
    k[:, _LSHO] = k[:, _NECK] + shoulder * right
    k[:, _RHIP] = root - hip * right
    k[:, _LHIP] = root + hip * right
    k[:, _RELB] = k[:, _RSHO] + upper_arm * _direction(r_upper + lean)
    k[:, _RWRI] = k[:, _RELB] + forearm * _direction(r_upper + r_elbow + lean)
    k[:, _LELB] = k[:, _LSHO] + upper_arm * _direction(l_upper + lean)
    k[:, _LWRI] = k[:, _LELB] + forearm * _direction(l_upper + l_elbow + lean)
    k[:, _RKNE] = k[:, _RHIP] + thigh * _direction(r_thigh)
    k[:, _RANK] = k[:, _RKNE] + shin * _direction(r_thigh - r_knee)
    k[:, _LKNE] = k[:, _LHIP] + thigh * _direction(l_thigh)
    k[:, _LANK] = k[:, _LKNE] + shin * _direction(l_thigh - l_knee)

    # Fit the whole sequence (with room for the head, hands and feet) in the image.
    pad = 0.35 * torso
    lo = k.reshape(-1, 2).min(0) - pad
    hi = k.reshape(-1, 2).max(0) + pad
    margin = 0.04
    avail = np.array([w, h]) * (1 - 2 * margin)
    scale = float(np.min(avail / (hi - lo))) * rng.uniform(0.85, 1.0)
    room = np.array([w, h]) * (1 - 2 * margin) - (hi - lo) * scale
    offset = np.array([w, h]) * margin + room * rng.uniform(0.0, 1.0, 2) - lo * scale
    xy = k * scale + offset - 0.5                              # pixel centres at integers
    conf = np.ones((num_frames, 18, 1))
    return np.concatenate([xy, conf], -1).astype(np.float32)


# ----------------------------------------------------------------------------- appearance


@dataclasses.dataclass(frozen=True)
class Appearance:
    """How a synthetic person looks. Colours are RGB in [0, 1].

    ``limb_width`` is a limb's half-width as a fraction of the torso length;
    ``head_scale`` multiplies the head radius; the background is ``background`` modulated
    in brightness by two plane waves (``texture_*``, frequencies in cycles per image).
    """

    skin: Color
    hair: Color
    shirt: Color
    trousers: Color
    shoes: Color
    background: Color
    limb_width: float = 0.15
    head_scale: float = 1.0
    texture_amplitude: float = 0.15
    texture_freqs: tuple[float, float, float, float] = (3.0, 1.0, -1.0, 4.0)
    texture_phases: tuple[float, float] = (0.0, 0.0)


_SKIN_TONES = ((0.98, 0.84, 0.72), (0.93, 0.75, 0.60), (0.80, 0.60, 0.45),
               (0.65, 0.45, 0.32), (0.48, 0.32, 0.22), (0.36, 0.24, 0.17))
_HAIR = ((0.08, 0.06, 0.05), (0.30, 0.18, 0.08), (0.55, 0.38, 0.18), (0.85, 0.72, 0.45),
         (0.55, 0.15, 0.06), (0.7, 0.7, 0.7))


def _luma(c: Sequence[float]) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _hsv(h: float, s: float, v: float) -> Color:
    return tuple(float(x) for x in colorsys.hsv_to_rgb(h % 1.0, s, v))


def random_appearance(seed: int) -> Appearance:
    """A seeded ``Appearance``: skin tone, hair, saturated shirt, contrasting trousers,
    shoes, a low-saturation textured background that contrasts with the clothes and skin."""
    rng = _seed_rng(seed, 0x617070)
    skin = tuple(float(np.clip(c + rng.uniform(-0.04, 0.04), 0, 1))
                 for c in _SKIN_TONES[rng.integers(len(_SKIN_TONES))])
    hair = _HAIR[rng.integers(len(_HAIR))]
    shirt_hue = rng.uniform()
    shirt = _hsv(shirt_hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 0.95))
    trousers = _hsv(shirt_hue + rng.uniform(0.25, 0.75), rng.uniform(0.3, 0.9),
                    rng.uniform(0.2, 0.7))
    shoes = _hsv(rng.uniform(), rng.uniform(0.0, 0.5), rng.uniform(0.05, 0.35))
    background = _hsv(rng.uniform(), rng.uniform(0.05, 0.35), rng.uniform(0.25, 0.95))
    for _ in range(64):  # deterministic: the retries draw from the same generator
        if min(abs(_luma(background) - _luma(c)) for c in (skin, shirt, trousers)) >= 0.12:
            break
        background = _hsv(rng.uniform(), rng.uniform(0.05, 0.35), rng.uniform(0.1, 1.0))
    freqs = rng.uniform(1.0, 5.0, 4) * rng.choice([-1.0, 1.0], 4)
    return Appearance(
        skin=skin, hair=tuple(hair), shirt=shirt, trousers=trousers, shoes=shoes,
        background=background,
        limb_width=float(rng.uniform(0.11, 0.19)),
        head_scale=float(rng.uniform(0.9, 1.15)),
        texture_amplitude=float(rng.uniform(0.06, 0.2)),
        texture_freqs=tuple(float(f) for f in freqs),
        texture_phases=tuple(float(p) for p in rng.uniform(0, 2 * np.pi, 2)),
    )


# ----------------------------------------------------------------------------- drawing


class _Canvas:
    """An [H, W, 3] float image in [0, 1] with antialiased shape compositing."""

    def __init__(self, h: int, w: int, background: np.ndarray):
        self.h, self.w = h, w
        self.img = background
        ys = np.arange(h, dtype=np.float32)[:, None]
        xs = np.arange(w, dtype=np.float32)[None, :]
        self.ys, self.xs = ys, xs

    def _blend(self, alpha: np.ndarray, color: Sequence[float]) -> None:
        a = alpha[..., None]
        self.img = self.img * (1 - a) + np.asarray(color, np.float32) * a

    def segment(self, p0: np.ndarray, p1: np.ndarray, radius: float, color: Color) -> None:
        dist, _ = pose_lib.segment_distance(p0[None], p1[None], (self.h, self.w))
        self._blend(np.clip(radius - dist[0] + 0.5, 0.0, 1.0), color)

    def disc(self, c: np.ndarray, radius: float, color: Color) -> None:
        d = np.hypot(self.xs - c[0], self.ys - c[1])
        self._blend(np.clip(radius - d + 0.5, 0.0, 1.0), color)

    def polygon(self, pts: np.ndarray, color: Color) -> None:
        """Fills a simple polygon ([N, 2] x, y) by the even-odd rule, edges antialiased."""
        inside = np.zeros((self.h, self.w), bool)
        for a, b in zip(pts, np.roll(pts, -1, 0)):
            crosses = (a[1] > self.ys) != (b[1] > self.ys)
            x_at = a[0] + (self.ys - a[1]) * (b[0] - a[0]) / ((b[1] - a[1]) or 1e-12)
            inside ^= crosses & (self.xs < x_at)
        dist, _ = pose_lib.segment_distance(pts, np.roll(pts, -1, 0), (self.h, self.w))
        edge = np.clip(dist.min(0), 0.0, 0.5)
        self._blend(np.where(inside, 0.5 + edge, 0.5 - edge), color)


def _background(app: Appearance, h: int, w: int) -> np.ndarray:
    y = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h
    x = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / w
    f = app.texture_freqs
    p = app.texture_phases
    pattern = (0.6 * np.sin(2 * np.pi * (f[0] * x + f[1] * y) + p[0])
               + 0.4 * np.sin(2 * np.pi * (f[2] * x + f[3] * y) + p[1]))
    img = np.asarray(app.background, np.float32) * (1 + app.texture_amplitude * pattern)[..., None]
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _render_one(k: np.ndarray, h: int, w: int, app: Appearance, threshold: float) -> np.ndarray:
    canvas = _Canvas(h, w, _background(app, h, w))
    vis = k[:, 2] > threshold
    p = k[:, :2]
    hips = [j for j in (_RHIP, _LHIP) if vis[j]]
    # Body scale: the torso length (neck to mid-hip), else a tenth of the image height.
    if vis[_NECK] and hips:
        unit = float(np.linalg.norm(p[_NECK] - p[hips].mean(0)))
    else:
        unit = 0.0
    unit = unit if unit > 1e-3 else 0.1 * h
    r = max(0.75, app.limb_width * unit)

    def seg(a: int, b: int, radius: float, color: Color) -> None:
        if vis[a] and vis[b]:
            canvas.segment(p[a], p[b], radius, color)

    # Legs and pelvis, shoes.
    for a, b in ((_RHIP, _RKNE), (_RKNE, _RANK), (_LHIP, _LKNE), (_LKNE, _LANK)):
        seg(a, b, 1.15 * r, app.trousers)
    seg(_RHIP, _LHIP, 1.15 * r, app.trousers)
    for j in (_RANK, _LANK):
        if vis[j]:
            canvas.disc(p[j], 1.2 * r, app.shoes)
    # Torso: the shoulder-hip quadrilateral with rounded edges.
    quad = [_RSHO, _LSHO, _LHIP, _RHIP]
    if all(vis[quad]):
        canvas.polygon(p[quad], app.shirt)
        for a, b in zip(quad, quad[1:] + quad[:1]):
            seg(a, b, 0.8 * r, app.shirt)
    else:
        seg(_NECK, _RHIP, 1.5 * r, app.shirt)
        seg(_NECK, _LHIP, 1.5 * r, app.shirt)
    seg(_NECK, _RSHO, r, app.shirt)
    seg(_NECK, _LSHO, r, app.shirt)
    # Arms: shirt sleeves, bare forearms, hands.
    for sho, elb, wri in ((_RSHO, _RELB, _RWRI), (_LSHO, _LELB, _LWRI)):
        seg(sho, elb, r, app.shirt)
        seg(elb, wri, 0.85 * r, app.skin)
        if vis[wri]:
            canvas.disc(p[wri], 1.1 * r, app.skin)
    # Neck and head: hair behind, face, eyes.
    if vis[_NOSE]:
        head_r = 0.24 * unit * app.head_scale
        ears = [j for j in (_REAR, _LEAR, _REYE, _LEYE) if vis[j]]
        centre = p[ears].mean(0) if ears else p[_NOSE]
        if vis[_NECK]:
            canvas.segment(p[_NECK], centre, 0.7 * r, app.skin)
            up = centre - p[_NECK]
            up = up / max(float(np.linalg.norm(up)), 1e-6)
        else:
            up = np.array([0.0, -1.0])
        canvas.disc(centre + 0.2 * head_r * up, 1.08 * head_r, app.hair)
        canvas.disc(centre - 0.05 * head_r * up, head_r, app.skin)
        for j in (_REYE, _LEYE):
            if vis[j]:
                canvas.disc(p[j], max(0.3, 0.12 * head_r), (0.05, 0.05, 0.05))
    return canvas.img


def render_person(kps: np.ndarray, size: int | Sequence[int], appearance: Appearance, *,
                  threshold: float = pose_lib.CONF_THRESHOLD) -> np.ndarray:
    """Draws a person with ``appearance`` in the pose ``kps``: float32 [..., H, W, 3] in [-1, 1].

    ``kps``: [..., K, 3] keypoints (COCO-18 or BODY_25) in pixels of an image of ``size``.
    Trousered legs with shoes, a shirt torso and sleeves, bare forearms and hands, a head
    with hair, over the appearance's textured background; joints at confidence <=
    ``threshold`` and the parts attached to them are left out.
    """
    kps = pose_lib.as_coco18(kps)
    h, w = pose_lib.size_hw(size)
    lead = kps.shape[:-2]
    flat = kps.reshape(-1, *kps.shape[-2:])
    out = np.stack([_render_one(k, h, w, appearance, threshold) for k in flat])
    return (out * 2.0 - 1.0).astype(np.float32).reshape(*lead, h, w, 3)


def make_triples(num_subjects: int, frames_per_subject: int, size: int | Sequence[int] = 64,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """DreamPose training material for ``num_subjects`` synthetic people.

    Returns float32 arrays (N subjects, T frames each):
      ``subject_image`` [N, H, W, 3]: the subject's frame 0 (the "photo");
      ``poses`` [N, T, H, W, 2]: ``pose.render_pose_uv`` of every frame;
      ``frames`` [N, T, H, W, 3]: the person rendered in every frame's pose;
      ``keypoints`` [N, T, 18, 3]: the COCO-18 keypoints behind both.
    A training triple is (subject_image[n], pose window around t, frames[n, t]). Subject n
    depends only on (seed, n), so a larger N extends a smaller one.
    """
    if num_subjects <= 0 or frames_per_subject <= 0:
        raise ValueError(f"make_triples needs at least one subject and frame, got "
                         f"{num_subjects} subjects of {frames_per_subject} frames")
    h, w = pose_lib.size_hw(size)
    images, poses, frames, keypoints = [], [], [], []
    for n in range(num_subjects):
        motion_seed, appearance_seed = np.random.SeedSequence(
            [int(seed) & 0xFFFFFFFF, n]).generate_state(2)
        kps = random_motion(frames_per_subject, int(motion_seed), (h, w))
        video = render_person(kps, (h, w), random_appearance(int(appearance_seed)))
        keypoints.append(kps)
        frames.append(video)
        images.append(video[0])
        poses.append(pose_lib.render_pose_uv(kps, (h, w)))
    return {
        "subject_image": np.stack(images).astype(np.float32),
        "poses": np.stack(poses).astype(np.float32),
        "frames": np.stack(frames).astype(np.float32),
        "keypoints": np.stack(keypoints).astype(np.float32),
    }
