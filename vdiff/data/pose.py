"""2D human pose: keypoint files, interpolation, pose maps for DreamPose and ControlNet.

Numpy only (PIL to read images). Conventions shared by every function here:

* Keypoints are float arrays ``[..., K, 3]`` of ``(x, y, confidence)`` in pixels of the
  image they were detected on, with OpenPose's convention: the pixel in row ``i``,
  column ``j`` is centred at ``x = j, y = i``. OpenPose writes an undetected joint as
  ``0, 0, 0``; a joint counts as visible when its confidence exceeds ``threshold``
  (default ``CONF_THRESHOLD``, OpenPose's own render threshold).
* Two layouts are known: OpenPose BODY_25 (``K = 25``, OpenPose's default output) and
  COCO-18 (``K = 18``, OpenPose's COCO model and the format ControlNet-OpenPose was
  trained on). The renderers draw the COCO-18 skeleton; BODY_25 input is converted with
  ``body25_to_coco18`` (which drops the mid-hip and the feet), so one pose drawn from
  either layout gives the same map.
* Every image or map returned is float32 in [-1, 1], background -1.
* ``size`` is ``int`` (square) or ``(height, width)``.

The functions live in `pose_keypoints` (layouts, rescaling, interpolation), `pose_files`
(OpenPose JSON and DensePose IUV readers), `pose_render` (pose maps) and `pose_windowing`
(a frame's window of neighbouring pose maps); every name below is importable from here.
"""

from __future__ import annotations

from vdiff.data.pose_files import (
    PoseFileError,
    load_densepose_iuv,
    load_keypoint_sequence,
    load_openpose_json,
    natural_key,
)
from vdiff.data.pose_keypoints import (
    BODY25_LIMBS,
    BODY25_NAMES,
    COCO18_LIMBS,
    COCO18_NAMES,
    CONF_THRESHOLD,
    LAYOUTS,
    as_coco18,
    body25_to_coco18,
    interpolate_keypoints,
    layout_of,
    normalize_keypoints,
    size_hw,
)
from vdiff.data.pose_render import (
    PART_CODES,
    openpose_colors,
    render_openpose_rgb,
    render_pose_uv,
    segment_distance,
)
from vdiff.data.pose_windowing import pose_window, pose_window_indices, pose_windows

__all__ = [
    "BODY25_LIMBS",
    "BODY25_NAMES",
    "COCO18_LIMBS",
    "COCO18_NAMES",
    "CONF_THRESHOLD",
    "LAYOUTS",
    "PART_CODES",
    "PoseFileError",
    "as_coco18",
    "body25_to_coco18",
    "interpolate_keypoints",
    "layout_of",
    "load_densepose_iuv",
    "load_keypoint_sequence",
    "load_openpose_json",
    "natural_key",
    "normalize_keypoints",
    "openpose_colors",
    "pose_window",
    "pose_window_indices",
    "pose_windows",
    "render_openpose_rgb",
    "render_pose_uv",
    "segment_distance",
    "size_hw",
]
