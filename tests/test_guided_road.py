"""One shading road in Blender (issue #16, item 5): a sheet whose views all carry their UDP
is painted by the guided shader, through Neural Render Frame and the render engine alike;
take one view's UDP away and the image-only CoNR paints, and the report says which."""

from __future__ import annotations

import numpy as np
from PIL import Image

SIZE = 128


def _toy_with_rendered_sheet(bpy, toy):
    bpy.context.view_layer.objects.active = toy
    toy.select_set(True)
    result = bpy.ops.anirender.render_sheet_views(
        views={"FRONT", "LEFT", "BACK", "RIGHT"}, size=160, samples=2, output_dir="//sheet/"
    )
    assert result == {"FINISHED"}
    render = bpy.context.scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = 200, 160, 100


def _frame_pixels(bpy, name):
    image = bpy.data.images[name]
    width, height = image.size
    pixels = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(pixels)
    return pixels.reshape(height, width, 4)[::-1]


def _guided_frame(bpy, toy, frame):
    """What the guided road must give: the pass renderer's UDP, the sheet read with its
    UDPs, the shipped guided shader, framed the official way at the working size."""
    from anirender.addon.passes.renderer import PassRenderer
    from anirender.addon.passes.request import PassRequest
    from anirender.addon.shading.sheets import read_sheet_for_shading
    from anirender.models.alpha import to_straight_uint8
    from anirender.models.framing import shade_in_frame
    from anirender.models.guided import load_guided

    images, udps = read_sheet_for_shading(toy, SIZE)
    assert udps is not None and udps.shape == (4, SIZE, SIZE, 4)
    request = PassRequest(
        bpy.app.tempdir or "/tmp", [frame], ("udp",), ("npz",), True, None, overwrite=True
    )
    with PassRenderer(bpy.context.scene, toy, request) as renderer:
        udp = renderer.render_frame(frame)["udp"]
    shader = load_guided()
    sheet = shader.encode_sheet(images, udps)
    rgba = shade_in_frame(lambda u: shader.render(sheet, u), udp, SIZE)
    return to_straight_uint8(rgba)


def test_a_sheet_with_udps_is_shaded_by_the_guided_shader_and_one_without_by_conr(
    shader_addon, toy_character, tmp_path, capfd, artifacts_dir
):
    import bpy

    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    toy = bpy.data.objects[toy_character.name]
    _toy_with_rendered_sheet(bpy, toy)
    shader_addon.service_mode = "IN_PROCESS"
    bpy.context.scene.frame_set(4)

    assert bpy.ops.anirender.neural_render_frame(size=str(SIZE)) == {"FINISHED"}
    guided = (_frame_pixels(bpy, f"{toy.name} Neural Frame") * 255).round().astype(int)
    assert "guided shader" in capfd.readouterr().out
    want = _guided_frame(bpy, toy, 4).astype(int)
    assert guided.shape == want.shape == (160, 200, 4)
    assert np.abs(guided - want).max() <= 2
    assert (guided[..., 3] > 127).mean() > 0.03  # the toy is there

    # the render engine takes the same road
    from anirender.addon.shading.engine import cached_sheet
    from anirender.addon.shading.frame_shading import session_for

    images, udps = cached_sheet(toy, SIZE)
    assert udps is not None
    assert session_for({"mode": "IN_PROCESS", "weights": ""}, images, udps).shader == "guided"

    # one view without its UDP: the image-only CoNR paints, and says so
    toy.anirender.sheet[1].udp_filepath = ""
    assert bpy.ops.anirender.neural_render_frame(size=str(SIZE)) == {"FINISHED"}
    conr = (_frame_pixels(bpy, f"{toy.name} Neural Frame") * 255).round().astype(int)
    assert "image-only CoNR" in capfd.readouterr().out
    assert np.abs(conr - guided).max() > 20
    assert cached_sheet(toy, SIZE)[1] is None
    Image.fromarray(np.concatenate([guided, conr], 1).astype(np.uint8)).save(
        artifacts_dir / "guided_road_guided_then_conr.png"
    )
