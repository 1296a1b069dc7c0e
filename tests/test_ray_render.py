"""``anirender render --ray``: chunks of frames as Ray tasks on a local Ray cluster, each a
worker process with Blender; the toy character at 128 x 96 with the tiny CoNR weights."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from service_support import sheet_images

pytest.importorskip("ray")


@pytest.fixture
def toy_blend(shader_addon, toy_character, tiny_conr_weights, tmp_path):
    """The toy with a two-view sheet, AniRender as the engine, saved as toy.blend."""
    import bpy

    from anirender.addon.passes.canonical import set_canonical_pose

    set_canonical_pose(toy_character)
    for i, image in enumerate(sheet_images(2, 200, seed=21)):
        path = tmp_path / f"sheet_{i}.png"
        Image.fromarray(image).save(path)
        toy_character.anirender.sheet.add().filepath = str(path)
    scene = bpy.context.scene
    scene.render.engine = "ANIRENDER"
    scene.anirender.neural.size = "128"
    scene.anirender.neural.weights = str(tiny_conr_weights)
    scene.anirender.neural.service_mode = "IN_PROCESS"
    render = scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = 256, 192, 50
    render.film_transparent = True
    scene.view_settings.view_transform = "Standard"
    settings = render.image_settings
    settings.media_type = "IMAGE"
    settings.file_format = "PNG"
    settings.color_mode = "RGBA"
    blend = tmp_path / "toy.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    return blend


def _render(blend, out, *extra, env=None):
    command = [sys.executable, "-m", "anirender.cli", "render", str(blend)]
    command += ["--frames", "1-4", "--out", f"{out}/", *extra]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("rendered "))
    listed = line.split("(", 1)[1].split(")", 1)[0]
    return [int(f) for f in listed.split(", ") if f != "none"], done


def test_ray_chunks_equal_one_process_and_a_killed_worker_is_retried(toy_blend, tmp_path):
    """Frames 1-4 in two chunks of 2 on a local Ray cluster; the first worker of chunk 3-4
    exits (as if killed) right after writing frame 3. Ray runs that chunk again, which
    keeps frame 3 and renders 4: every frame once, equal to one process's render; then
    the frames become one MP4."""
    alone, _ = _render(toy_blend, tmp_path / "alone")
    assert alone == [1, 2, 3, 4]

    marker = tmp_path / "crashed"
    env = dict(os.environ, ANIRENDER_RENDER_CRASH=f"3:{marker}", RAY_ADDRESS="")
    movie = tmp_path / "movie" / "toy.mp4"
    extra = ("--ray", "--chunk", "2", "--movie", str(movie))
    rendered, done = _render(toy_blend, tmp_path / "ray", *extra, env=env)
    assert marker.is_file()  # the first attempt of chunk 3-4 died after frame 3
    assert "2 chunks on Ray" in done.stdout and "/4 [" in done.stderr  # tqdm's bar
    assert rendered == [1, 2, 4]  # 3 by the dead attempt, kept by the retry
    names = [f"toy_{f:04d}.png" for f in range(1, 5)]
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == names
    # frame 3 was not written again after the worker died
    assert (tmp_path / "ray" / names[2]).stat().st_mtime <= marker.stat().st_mtime + 1e-3
    for name in names:
        a = np.asarray(Image.open(tmp_path / "alone" / name).convert("RGBA"), dtype=int)
        b = np.asarray(Image.open(tmp_path / "ray" / name).convert("RGBA"), dtype=int)
        assert a.shape == b.shape == (96, 128, 4)
        assert (a[..., 3] > 0).mean() > 0.05
        assert np.abs(a - b).max() <= 2, name

    import bpy

    clip = bpy.data.movieclips.load(str(movie))  # assembled at the end, all four frames
    assert clip.frame_duration == 4 and tuple(clip.size) == (128, 96)


def test_without_ray_installed_ray_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    from anirender.cli import main

    blend = tmp_path / "scene.blend"
    blend.write_bytes(b"BLENDER")  # never opened: Ray is asked for first
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["render", str(blend), "--frames", "1-4", "--ray"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "anirender[ray]"' in err and "leave out --ray" in err
