"""``anirender shade`` end to end on a tiny folder, and its refusals."""

import argparse

import numpy as np
import pytest
from PIL import Image

from anirender.cli import shade as shade_cli
from anirender.errors import AniRenderError
from anirender.models.conr.config import CoNRConfig
from anirender.models.conr.model import CoNR, randomize_weights
from anirender.models.exr import write_exr

H, W = 96, 72


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "small.safetensors"
    model = randomize_weights(CoNR(CoNRConfig(width=0.25, shader_channels=32)), 3, gain=0.85)
    model.save_safetensors(path)
    return path


def _blob(h, w, cy, cx, ry, rx):
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1


def _udp(body):
    udp = np.zeros((*body.shape, 4), np.float32)
    yy, xx = np.mgrid[: body.shape[0], : body.shape[1]]
    udp[..., 0] = xx / body.shape[1]
    udp[..., 1] = yy / body.shape[0]
    udp[..., 2] = 0.5
    udp[..., 3] = 1
    udp[~body] = 0
    return udp


@pytest.fixture
def scene(tmp_path):
    sheet, udp = tmp_path / "sheet", tmp_path / "udp"
    sheet.mkdir()
    udp.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(120, 80), (64, 100)]):
        image = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
        image[..., 3] = np.where(_blob(h, w, h / 2, w / 2, h / 3, w / 4), 255, 0)
        Image.fromarray(image, "RGBA").save(sheet / f"view{i}.png")
    for i in range(3):
        body = _blob(H, W, 48, 30 + 4 * i, 35, 15)
        if i == 2:
            write_exr(udp / f"frame{i:03d}.exr", _udp(body))
        else:
            np.savez(udp / f"frame{i:03d}.npz", i=_udp(body))
    return tmp_path


def _shade(argv):
    parser = argparse.ArgumentParser()
    shade_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["shade", *argv])
    return args.func(args)


def _args(scene, weights_file, *extra):
    return [
        "--sheet", str(scene / "sheet"), "--udp", str(scene / "udp"),
        "--out", str(scene / "out"), "--weights", str(weights_file), *extra,
    ]  # fmt: skip


def test_shade_folder(scene, weights_file, capsys):
    assert _shade(_args(scene, weights_file)) == 0
    outputs = sorted(p.name for p in (scene / "out").iterdir())
    assert outputs == ["frame000.png", "frame001.png", "frame002.png"]
    frames = [np.asarray(Image.open(scene / "out" / n)) for n in outputs]
    for i, frame in enumerate(frames):
        assert frame.shape == (H, W, 4)
        body = _blob(H, W, 48, 30 + 4 * i, 35, 15)
        rows, cols = np.nonzero(body)
        outside = np.ones((H, W), bool)  # beyond the crop square nothing is painted
        half = (rows.max() - rows.min() + 1) / 2
        outside[:, max(0, int(cols.mean() - half - 2)) : int(cols.mean() + half + 3)] = False
        assert frame[outside, 3].max() == 0
        assert frame[body, 3].std() > 0 or frame[body, :3].std() > 0
    assert not np.array_equal(frames[0], frames[1])
    assert "3/3" in capsys.readouterr().err  # the progress bar

    assert _shade(_args(scene, weights_file, "--premultiplied")) == 0
    pre = np.asarray(Image.open(scene / "out" / "frame000.png")).astype(np.float64)
    straight = frames[0].astype(np.float64)
    expected = straight[..., :3] * straight[..., 3:] / 255
    assert np.abs(pre[..., :3] - expected).max() <= 2.5


def _expect_refusal(scene, weights_file, message):
    with pytest.raises(AniRenderError, match=message):
        _shade(_args(scene, weights_file))
    out = scene / "out"
    assert not out.exists() or not any(out.iterdir())


def test_sheet_without_transparency(scene, weights_file):
    Image.new("RGB", (64, 64), (10, 20, 30)).save(scene / "sheet" / "flat.png")
    _expect_refusal(scene, weights_file, "flat.png has no transparency")


def test_opaque_sheet(scene, weights_file):
    Image.new("RGBA", (64, 64), (10, 20, 30, 255)).save(scene / "sheet" / "flat.png")
    _expect_refusal(scene, weights_file, "flat.png has no transparent background")


def test_nan_udp(scene, weights_file):
    bad = _udp(_blob(H, W, 48, 30, 35, 15))
    bad[40, 30, 0] = np.nan
    np.savez(scene / "udp" / "frame001.npz", i=bad)
    _expect_refusal(scene, weights_file, "frame001.npz contains NaN")


def test_out_of_range_udp(scene, weights_file):
    np.savez(scene / "udp" / "frame001.npz", i=_udp(_blob(H, W, 48, 30, 35, 15)) * 2)
    _expect_refusal(scene, weights_file, r"frame001.npz values must lie in \[0, 1\]")


def test_mismatched_frame_sizes(scene, weights_file):
    np.savez(scene / "udp" / "frame001.npz", i=_udp(_blob(H + 8, W, 48, 30, 35, 15)))
    _expect_refusal(scene, weights_file, "one size")


def test_wrong_udp_layout(scene, weights_file):
    np.savez(scene / "udp" / "frame001.npz", i=np.zeros((H, W, 3), np.float32))
    _expect_refusal(scene, weights_file, r"H x W x 4")


def test_empty_folder(scene, weights_file):
    for p in (scene / "udp").iterdir():
        p.unlink()
    _expect_refusal(scene, weights_file, "has no UDP files")


def test_missing_weights(scene, tmp_path):
    _expect_refusal(scene, tmp_path / "nope.safetensors", "Weights file or folder not found")
