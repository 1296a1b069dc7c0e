"""Camera matrices of the pass renderers, as float64 numpy 4x4 (Blender's conventions:
camera looks down its -Z, +Y up; clip space OpenGL style)."""

from __future__ import annotations

import numpy as np


def rigid_inverse(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a rotation + translation 4x4 (no LAPACK call: cheap and thread-free)."""
    inverse = np.eye(4)
    inverse[:3, :3] = matrix[:3, :3].T
    inverse[:3, 3] = -matrix[:3, :3].T @ matrix[:3, 3]
    return inverse
