"""The AniRender render engine through Blender's own render operator (F12, Ctrl+F12):
the toy character with an image-only sheet, the shipped CoNR weights in process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from service_support import sheet_images

WORKING = "128"  # the shader's working square
RESOLUTION = (256, 192, 50)  # x, y, percentage: frames of 128 x 96
FRAME = (128, 96)


@pytest.fixture
def engine_scene(shader_addon, toy_character, tmp_path):
    """The toy with a two-view sheet and canonical colours, AniRender as the engine."""
    import bpy

    from anirender.addon.passes.canonical import set_canonical_pose

    set_canonical_pose(toy_character)
    for i, image in enumerate(sheet_images(2, 200, seed=21)):
        path = tmp_path / f"sheet_{i}.png"
        Image.fromarray(image).save(path)
        toy_character.anirender.sheet.add().filepath = str(path)
    shader_addon.service_mode = "IN_PROCESS"
    scene = bpy.context.scene
    scene.render.engine = "ANIRENDER"
    scene.anirender.neural.size = WORKING
    render = scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = RESOLUTION
    render.film_transparent = True
    scene.view_settings.view_transform = "Standard"
    set_format(scene, "PNG")
    return scene


def set_format(scene, fmt: str) -> None:
    settings = scene.render.image_settings
    if fmt == "EXR_MULTILAYER":
        settings.media_type = "MULTI_LAYER_IMAGE"
        settings.color_depth = "32"
    else:
        settings.media_type = "IMAGE"
        settings.file_format = fmt
        settings.color_mode = "RGBA"


def expected_frame(scene, frame: int, tmp_path) -> tuple[np.ndarray, np.ndarray]:
    """What F12 should write: the pass renderer's UDP at the output size, framed and
    shaded by the same in-process client, straight-alpha uint8; and the UDP."""
    import bpy

    from anirender.addon.passes.renderer import PassRenderer
    from anirender.addon.passes.request import PassRequest
    from anirender.addon.shading.sessions import ShadingSession
    from anirender.addon.shading.sheets import read_sheet
    from anirender.models.alpha import to_straight_uint8
    from anirender.models.framing import shade_in_frame

    toy = bpy.data.objects["Toy"]
    request = PassRequest(tmp_path / "expected", [frame], ("udp",), ("npz",), True, None)
    with PassRenderer(scene, toy, request) as renderer:
        udp = renderer.render_frame(frame)["udp"]
    session = ShadingSession({"mode": "IN_PROCESS", "weights": ""}, read_sheet(toy, 128))
    return to_straight_uint8(shade_in_frame(session.shade, udp, 128)), udp


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGBA"))


def test_engine_is_chosen_in_render_properties_with_its_panels(engine_scene):
    import bpy
    from test_ui_headless import _draw

    from anirender.panels import engine as panels

    engines = {
        getattr(cls, "bl_idname", ""): getattr(cls, "bl_label", "")
        for cls in bpy.types.RenderEngine.__subclasses__()
    }
    assert engines["ANIRENDER"] == "AniRender"  # and the fixture could choose it
    context = bpy.context
    assert context.engine == "ANIRENDER"
    drawn = _draw(panels.ANIRENDER_PT_engine_shader.draw, context)
    assert [name for kind, name in drawn if kind == "prop"] == ["size", "weights", "service_mode"]
    characters = _draw(panels.ANIRENDER_PT_engine_characters.draw, context)
    assert ("label", "Toy: 2 sheet views, image-only CoNR") in characters
    assert panels.ANIRENDER_PT_engine_shader.poll(context)
    assert "ANIRENDER" in bpy.types.RENDER_PT_color_management.COMPAT_ENGINES
    engine_scene.render.engine = "CYCLES"
    assert not panels.ANIRENDER_PT_engine_shader.poll(bpy.context)


def test_f12_writes_the_shaded_frame_at_the_scene_resolution(engine_scene, tmp_path, artifacts_dir):
    import bpy

    engine_scene.frame_set(3)
    want, udp = expected_frame(engine_scene, 3, tmp_path)
    engine_scene.render.filepath = str(tmp_path / "still.png")
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    got = read_png(tmp_path / "still.png")
    assert got.shape == (FRAME[1], FRAME[0], 4)
    visible = udp[..., 3] > 0
    assert (got[..., 3][visible] > 0).mean() > 0.95  # alpha where the character is
    assert got[..., 3][:, :5].max() == 0  # and film transparent beside it
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff[..., 3].max() <= 1 and diff[visible].max() <= 2  # sRGB there and back
    Image.fromarray(np.concatenate([(udp * 255).astype(np.uint8), got], 1)).save(
        artifacts_dir / "engine_f12_toy_udp_and_shaded.png"
    )
