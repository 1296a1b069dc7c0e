"""models.exr: the numpy + zlib EXR encoder writes files OpenEXR and Blender read back
bit for bit, whatever the content (empty bands, incompressible noise, -0.0, inf, NaN)."""

import numpy as np
import OpenEXR
import pytest

from anirender.errors import AniRenderError
from anirender.models import exr


def _bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def _pass_like(height, width, channels, seed):
    """A pass image: mostly empty background, a blob of smooth values, occupancy."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, channels), np.float32)
    rows, cols = np.mgrid[:height, :width]
    blob = (rows - height * 0.55) ** 2 / (0.3 * height) ** 2 + (cols - width * 0.4) ** 2 / (
        0.15 * width
    ) ** 2 < 1
    image[blob] = rng.uniform(0, 1, (blob.sum(), channels)).astype(np.float32)
    if channels == 4:
        image[..., 3] = blob
    return image


@pytest.mark.parametrize(
    "shape", [(1, 1, 4), (16, 16, 4), (17, 5, 3), (33, 40, 1), (70, 300, 4), (64, 48, 3)]
)
def test_openexr_reads_back_every_bit(tmp_path, shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.normal(size=shape).astype(np.float32)
    image[: shape[0] // 2] = 0.0  # empty bands, as a pass's background
    image.flat[::7] = -0.0
    image.flat[1::11] = np.inf
    image.flat[2::13] = np.nan
    path = tmp_path / "a.exr"
    for picture in (image, image[::-1]):  # empty bands first, then last (a short last block)
        exr.write_exr(path, picture)
        back = exr.read_exr(path)
        assert back.shape == shape
        np.testing.assert_array_equal(_bits(back), _bits(picture))
    with OpenEXR.File(str(path)) as f:
        compression = f.header()["compression"]
        channels = [c.name for c in f.header()["channels"]]
    assert compression == OpenEXR.ZIP_COMPRESSION
    assert channels == sorted({1: "Y", 3: "RGB", 4: "RGBA"}[shape[2]])


def test_same_pixels_as_openexr_writes_and_empty_bands_cost_little(tmp_path):
    image = _pass_like(512, 512, 4, seed=1)
    ours, theirs = tmp_path / "ours.exr", tmp_path / "theirs.exr"
    exr.write_exr(ours, image)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"RGBA": image}) as f:
        f.write(str(theirs))
    np.testing.assert_array_equal(_bits(exr.read_exr(ours)), _bits(exr.read_exr(theirs)))
    # compressed, within 15% of OpenEXR's own size (zlib's run-length strategy)
    assert ours.stat().st_size < 1.15 * theirs.stat().st_size
    assert ours.stat().st_size < image.nbytes / 4
    empty = tmp_path / "empty.exr"
    exr.write_exr(empty, np.zeros_like(image))
    assert (exr.read_exr(empty) == 0).all()
    assert empty.stat().st_size < 10_000


def test_blender_reads_the_file_too(tmp_path):
    from anirender.addon.passes.files import read_blender_image

    image = _pass_like(40, 56, 4, seed=2)
    path = tmp_path / "pass.exr"
    exr.write_exr(path, image)
    np.testing.assert_array_equal(read_blender_image(path), image)


def test_bad_arrays_are_refused():
    with pytest.raises(AniRenderError):
        exr.encode_exr(np.zeros((4, 4, 2), np.float32))
    with pytest.raises(AniRenderError):
        exr.encode_exr(np.zeros((0, 4, 4), np.float32))
