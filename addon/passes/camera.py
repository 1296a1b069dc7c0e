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


def camera_matrices(camera, depsgraph, width: int, height: int, aspect=(1.0, 1.0)):
    """(projection @ world-to-camera, camera-to-world) of ``camera`` (an original camera
    object, evaluated in ``depsgraph``) for a ``width`` x ``height`` image whose pixels
    have the aspect (x, y)."""
    evaluated = camera.evaluated_get(depsgraph)
    projection = evaluated.calc_matrix_camera(
        depsgraph, x=width, y=height, scale_x=aspect[0], scale_y=aspect[1]
    )
    to_world = np.array(evaluated.matrix_world, dtype=np.float64)
    # unit axes: a scaled camera must not scale normals or depth
    to_world[:3, :3] /= np.linalg.norm(to_world[:3, :3], axis=0)
    view = rigid_inverse(to_world)
    return np.array(projection, dtype=np.float64) @ view, to_world
