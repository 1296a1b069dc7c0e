"""Sheet views and their UDP files on disk (``models.sheet_udp``), without Blender."""

import numpy as np
import pytest
from PIL import Image

from anirender.errors import AniRenderError
from anirender.models.sheet_udp import read_sheet_folder, udp_path_for, write_udp_file


def _view(size=32, left=8):
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[4:28, left : left + 12] = (200, 100, 50, 255)
    udp = np.zeros((size, size, 4), np.float32)
    udp[4:28, left : left + 12] = (0.2, 0.5, 0.7, 1.0)
    return rgba, udp


def test_a_sheet_folder_reads_each_image_with_its_udp_and_whether_it_was_estimated(tmp_path):
    for name, source in (("a_front", None), ("b_left", "CoNR parser"), ("c_back", "none")):
        rgba, udp = _view()
        Image.fromarray(rgba).save(tmp_path / f"{name}.png")
        if source != "none":
            write_udp_file(udp_path_for(tmp_path / f"{name}.png"), udp, source=source)
    assert udp_path_for(tmp_path / "a_front.png").name == "a_front.udp.npz"
    with np.load(tmp_path / "a_front.udp.npz") as data:
        assert list(data) == ["i"]  # a rendered UDP: exactly the passes' layout
    views = read_sheet_folder(tmp_path)
    assert [(n, u is not None, e) for n, _, u, e in views] == [
        ("a_front.png", True, False),
        ("b_left.png", True, True),
        ("c_back.png", False, False),
    ]
    np.testing.assert_array_equal(views[0][2], _view()[1])
    assert not list(tmp_path.glob(".*"))  # nothing partial left


def test_a_udp_of_another_size_or_with_no_character_is_refused_by_name(tmp_path):
    rgba, udp = _view()
    Image.fromarray(rgba).save(tmp_path / "front.png")
    write_udp_file(tmp_path / "front.udp.npz", udp[:16])
    with pytest.raises(AniRenderError, match='"front.png" is 32x16 but its image is 32x32'):
        read_sheet_folder(tmp_path)
    write_udp_file(tmp_path / "front.udp.npz", np.zeros_like(udp))
    with pytest.raises(AniRenderError, match="no occupied pixel"):
        read_sheet_folder(tmp_path)


def test_the_parser_reads_at_the_size_its_weights_were_trained_at(tmp_path):
    from anirender.models.sheet_udp import parser_size
    from anirender.models.weights import SHIPPED_CONR

    assert parser_size(SHIPPED_CONR) == 128  # the shipped model: trained on 128 px samples
    assert parser_size(tmp_path / "conr.safetensors") == 256  # the released weights


def test_a_views_udp_is_framed_with_its_image_crop():
    from anirender.models.framing import frame_sheet_image
    from anirender.models.sheet_udp import frame_sheet_udp

    rgba, udp = _view(size=64, left=40)
    framed_image = frame_sheet_image(rgba, 32)
    framed_udp = frame_sheet_udp(rgba, udp, 32)
    assert framed_udp.shape == (32, 32, 4)
    np.testing.assert_array_equal(framed_udp[..., 3] > 0.5, framed_image[..., 3] > 127)


BLOCK_TORCH = """
import sys, importlib.abc
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch' (blocked: a plain Blender)")
sys.meta_path.insert(0, NoTorch())
import bpy
import anirender
anirender.register()
print("registered", hasattr(bpy.types.Object, "anirender"), "torch" in sys.modules)
anirender.unregister()
"""


def test_the_add_on_registers_in_a_blender_python_without_torch(tmp_path):
    """Blender's own Python has no torch: reading the weights store and sheet UDP files
    must not import it (only shading or estimating does, in the runtime)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "registered True False" in done.stdout


def test_the_parser_alone_detects_what_the_whole_model_detects(tiny_conr_weights, tmp_path):
    from anirender.models.conr.parser import load_udp_parser
    from anirender.models.weights import load_conr

    images = np.random.default_rng(4).integers(0, 256, (2, 128, 128, 4)).astype(np.uint8)
    whole = load_conr(tiny_conr_weights).detect_udp(images)
    alone = load_udp_parser(tiny_conr_weights).detect_udp(images)
    np.testing.assert_array_equal(alone, whole)
    (tmp_path / "other.safetensors").write_bytes(b"not weights")
    with pytest.raises(AniRenderError, match="not a readable safetensors file"):
        load_udp_parser(tmp_path / "other.safetensors")
