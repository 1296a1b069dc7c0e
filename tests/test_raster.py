"""models.raster: coverage at pixel centres, perspective-correct values, nearest wins."""

import numpy as np
import pytest

from anirender.models import raster


def _perspective(fov_deg=60.0, near=0.1, far=100.0):
    f = 1.0 / np.tan(np.radians(fov_deg) / 2)
    return np.array(
        [
            [f, 0, 0, 0],
            [0, f, 0, 0],
            [0, 0, (far + near) / (near - far), 2 * far * near / (near - far)],
            [0, 0, -1, 0],
        ]
    )


def _clip(points, projection):
    points = np.asarray(points, float)
    homogeneous = np.concatenate([points, np.ones_like(points[..., :1])], axis=-1)
    return homogeneous @ projection.T


def _pixel_rays(height, width, projection):
    """Camera-space direction (z = -1) through every pixel centre, row 0 at the top."""
    cols = (np.arange(width) + 0.5) / width * 2 - 1
    rows = 1 - (np.arange(height) + 0.5) / height * 2
    x = cols[None, :] / projection[0, 0]
    y = rows[:, None] / projection[1, 1]
    x, y = np.broadcast_arrays(x, y)
    return np.stack([x, y, -np.ones_like(x)], axis=-1)


def test_single_triangle_covers_exactly_the_pixel_centres_inside_it():
    rng = np.random.default_rng(3)
    corners = np.column_stack([rng.uniform(-0.95, 0.95, (3, 2)), np.zeros(3), np.ones(3)])
    frags = raster.rasterise(corners[None], 37, 53, device="cpu")
    # brute force: pixel centre inside the triangle by the sign of three edge functions
    height, width = 37, 53
    xs = (np.arange(width) + 0.5) / width * 2 - 1
    ys = 1 - (np.arange(height) + 0.5) / height * 2
    px, py = np.meshgrid(xs, ys)
    a, b, c = corners[:, :2]

    def edge(p, q):
        return (q[0] - p[0]) * (py - p[1]) - (q[1] - p[1]) * (px - p[0])

    e = np.stack([edge(a, b), edge(b, c), edge(c, a)])
    inside = (e >= 0).all(0) | (e <= 0).all(0)
    assert inside.sum() > 20
    np.testing.assert_array_equal(frags.coverage.numpy(), inside)


def test_values_are_perspective_correct_on_a_slanted_plane():
    projection = _perspective()
    # a quad slanting away from the camera: z from -2 (bottom) to -6 (top)
    quad = np.array([[-3, -2, -2], [3, -2, -2], [3, 2, -6], [-3, 2, -6]], float)
    tris = quad[[[0, 1, 2], [0, 2, 3]]]
    frags = raster.rasterise(_clip(tris, projection), 40, 40, device="cpu")
    # interpolate the camera-space position itself; it must equal the ray-plane hit
    image = frags.interpolate(tris).numpy()
    hit = frags.coverage.numpy()
    assert hit.mean() > 0.3
    normal = np.cross(quad[1] - quad[0], quad[3] - quad[0])
    rays = _pixel_rays(40, 40, projection)
    t = (quad[0] @ normal) / (rays @ normal)
    expected = rays * t[..., None]
    np.testing.assert_allclose(image[hit], expected[hit], atol=2e-5)  # float32 weights
    # depth varies 3x across the quad, so screen-space (affine) weights would miss by far
    assert np.ptp(expected[hit][:, 2]) > 2.0


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_the_nearest_triangle_wins_whatever_the_order(order):
    projection = _perspective()
    near = np.array([[-1, -1, -3], [1, -1, -3], [0, 1, -3]], float)
    far = near * [2, 2, 2]  # the same triangle, twice as far: covers the same pixels
    tris = np.stack([near, far])[list(order)]
    frags = raster.rasterise(_clip(tris, projection), 32, 32, device="cpu")
    covered = frags.coverage.numpy()
    assert covered.sum() > 50
    near_index = order.index(0)
    assert (frags.triangle.numpy()[covered] == near_index).all()


def test_small_batches_give_the_same_image(monkeypatch):
    rng = np.random.default_rng(0)
    centres = rng.uniform(-1, 1, (300, 1, 2))
    xy = centres + rng.normal(0, 0.15, (300, 3, 2))
    z = rng.uniform(-0.9, 0.9, (300, 1, 1)).repeat(3, 1)
    clip = np.concatenate([xy, z, np.ones((300, 3, 1))], axis=2)
    whole = raster.rasterise(clip, 64, 64, device="cpu")
    monkeypatch.setattr(raster, "_PAIRS_PER_BATCH", 97)
    batched = raster.rasterise(clip, 64, 64, device="cpu")
    assert whole.coverage.numpy().mean() > 0.5
    np.testing.assert_array_equal(whole.triangle.numpy(), batched.triangle.numpy())
    np.testing.assert_allclose(whole.barycentric.numpy(), batched.barycentric.numpy())


def test_triangles_behind_the_camera_are_dropped():
    projection = _perspective()
    behind = np.array([[[-1, -1, 3], [1, -1, 3], [0, 1, 3]]], float)
    frags = raster.rasterise(_clip(behind, projection), 16, 16, device="cpu")
    assert not frags.coverage.any()
    assert (frags.interpolate(np.ones((1, 3, 2))).numpy() == 0).all()


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        raster.rasterise(np.zeros((1, 3, 4)), 0, 8, device="cpu")
    with pytest.raises(ValueError):
        raster.rasterise(np.zeros((1, 4)), 8, 8, device="cpu")


def test_torch_and_the_numpy_twin_give_the_same_fragments_bit_for_bit():
    """The torch kernels (tuned for speed) and the plain numpy twin follow one rule with
    the same float32 arithmetic: a dense perspective soup gives identical fragments."""
    from anirender.models import raster_numpy

    rng = np.random.default_rng(5)
    count = 3000
    xy = rng.uniform(-1.1, 1.1, (count, 1, 2)) + rng.normal(0, 0.04, (count, 3, 2))
    z = rng.uniform(-0.9, 0.9, (count, 3, 1))
    w = rng.uniform(0.5, 3.0, (count, 3, 1))
    clip = np.concatenate([xy * w, z * w, w], axis=2).astype(np.float32)
    ours = raster.rasterise(clip, 90, 130, device="cpu")
    twin = raster_numpy.rasterise(clip, 90, 130)
    assert ours.coverage.numpy().mean() > 0.5
    np.testing.assert_array_equal(ours.triangle.numpy(), twin.triangle)
    np.testing.assert_array_equal(ours.barycentric.numpy(), twin.barycentric)
    np.testing.assert_array_equal(ours.depth.numpy(), twin.depth)
    values = rng.uniform(-1, 1, (count, 3, 5)).astype(np.float32)
    hits = ours.hits()
    np.testing.assert_array_equal(
        ours.interpolate_at(values, hits).numpy(), twin.interpolate_at(values, twin.hits())
    )
    np.testing.assert_array_equal(
        ours.interpolate(values).numpy().reshape(-1, 5)[hits.numpy()],
        ours.interpolate_at(values, hits).numpy(),
    )
