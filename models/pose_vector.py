"""The 20-value head pose vector (AnimeCeleb's, in the order this project fixes).

Indices 0..16 are expression weights in [0, 1], 17..19 the head angles in degrees:

====== ===================================== ======================================
index  names                                 meaning
====== ===================================== ======================================
0-5    eye_closed, eye_unimpressed,          eyes, left then right of each
       eye_surprised (_l, _r)
6-11   brow_angry, brow_raised,              eyebrows, left then right of each
       brow_lowered (_l, _r)
12-16  mouth_a, mouth_e, mouth_i, mouth_o,   mouth shapes
       mouth_u
17-19  head_roll, head_pitch, head_yaw       degrees; the dataset samples +-20
====== ===================================== ======================================

Every part of the suite (sliders, shape-key driving, dataset export, the wire format,
reenactment training and inference) reads the order from here; a foreign checkpoint
with another order is loaded through a permutation (``models.reenact``). No bpy, no
torch: Blender, the service and the trainers all import this module.
"""

from __future__ import annotations

import numpy as np

SIDES = ("l", "r")
EYE_SEMANTICS = ("eye_closed", "eye_unimpressed", "eye_surprised")
BROW_SEMANTICS = ("brow_angry", "brow_raised", "brow_lowered")
PAIRED_SEMANTICS = EYE_SEMANTICS + BROW_SEMANTICS
MOUTH_NAMES = ("mouth_a", "mouth_e", "mouth_i", "mouth_o", "mouth_u")
#: the 17 expression weights, indices 0..16
EXPRESSION_NAMES = tuple(f"{s}_{side}" for s in PAIRED_SEMANTICS for side in SIDES) + MOUTH_NAMES
#: the head angles in degrees, indices 17..19
ANGLE_NAMES = ("head_roll", "head_pitch", "head_yaw")
POSE_NAMES = EXPRESSION_NAMES + ANGLE_NAMES
POSE_SIZE = len(POSE_NAMES)
ANGLES = slice(len(EXPRESSION_NAMES), POSE_SIZE)
#: hard limit of a head angle in degrees (sliders, wire format)
ANGLE_LIMIT = 90.0
#: AnimeCeleb samples head angles from U(-20, 20) degrees
SAMPLE_ANGLE = 20.0

#: the pose of the mirrored face: every _l/_r pair swapped, roll and yaw negated
MIRROR_ORDER = tuple(i ^ 1 if i < 2 * len(PAIRED_SEMANTICS) else i for i in range(POSE_SIZE))
MIRROR_SIGN = np.array([1.0] * len(EXPRESSION_NAMES) + [-1.0, 1.0, -1.0], np.float32)


def mirrored(poses: np.ndarray) -> np.ndarray:
    """Pose vectors (..., 20) of the left-right mirrored face."""
    return np.asarray(poses, np.float32)[..., list(MIRROR_ORDER)] * MIRROR_SIGN
