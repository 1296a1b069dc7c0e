"""SceneGuard restores what operators touch; Job runs steps, workers and cancels."""

import threading

import pytest

from anirender.errors import AniRenderError


def _mess_up_scene(bpy):
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.render.resolution_x = 77
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = "OPEN_EXR"
    scene.render.image_settings.color_depth = "32"
    scene.cycles.samples = 1
    scene.view_settings.view_transform = "Raw"
    layer = bpy.context.view_layer
    layer.use_pass_z = True
    layer.material_override = bpy.data.materials.new("Override")
    layer.aovs.add().name = "udp"
    cam_data = bpy.data.cameras.new("Temp")
    cam = bpy.data.objects.new("TempCam", cam_data)
    scene.collection.objects.link(cam)
    scene.camera = cam
    scene.frame_set(42)
    for obj in scene.objects:
        obj.select_set(False)
        obj.hide_render = True
    layer.objects.active = cam


def test_guard_restores_everything(blender):
    from anirender.addon.core.guard import SceneGuard, scene_snapshot

    bpy = blender
    before = scene_snapshot(bpy.context)
    with SceneGuard(bpy.context):
        _mess_up_scene(bpy)
        assert scene_snapshot(bpy.context) != before
    assert scene_snapshot(bpy.context) == before


def test_guard_restores_on_error_and_keeps_declared_results(blender):
    from anirender.addon.core.guard import SceneGuard, scene_snapshot

    bpy = blender
    before = scene_snapshot(bpy.context)
    with pytest.raises(AniRenderError):
        with SceneGuard(bpy.context):
            _mess_up_scene(bpy)
            raise AniRenderError("boom")
    assert scene_snapshot(bpy.context) == before

    with SceneGuard(bpy.context) as guard:
        result = guard.keep(bpy.data.images.new("Result", 4, 4))
        bpy.data.images.new("Scratch", 4, 4)
    assert "Result" in bpy.data.images and result.name == "Result"
    assert "Scratch" not in bpy.data.images


def test_guard_keeps_what_a_kept_object_uses(blender):
    from anirender.addon.core.guard import SceneGuard

    bpy = blender
    with SceneGuard(bpy.context) as guard:
        mesh = bpy.data.meshes.new("Head")
        mesh.materials.append(bpy.data.materials.new("HeadColours"))
        obj = bpy.data.objects.new("Head", mesh)
        bpy.context.scene.collection.objects.link(obj)
        guard.keep(obj)
        bpy.data.materials.new("Leftover")
    assert "Head" in bpy.data.objects and "Head" in bpy.data.meshes
    assert "HeadColours" in bpy.data.materials and "Leftover" not in bpy.data.materials


def test_guard_restores_edit_mode(blender):
    from anirender.addon.core.guard import SceneGuard

    bpy = blender
    cube = bpy.data.objects["Cube"]
    bpy.context.view_layer.objects.active = cube
    bpy.ops.object.mode_set(mode="EDIT")
    with SceneGuard(bpy.context):
        bpy.ops.object.mode_set(mode="OBJECT")
    assert cube.mode == "EDIT"
    bpy.ops.object.mode_set(mode="OBJECT")


def test_job_runs_steps_and_worker_callbacks_on_main_thread():
    from anirender.addon.core.jobs import Job

    main = threading.get_ident()
    seen = []

    def steps(job):
        for i in range(5):
            job.submit(lambda x: (x * x, threading.get_ident()), i, then=seen.append)
            yield f"frame {i}"

    job = Job("Squares", steps, total=5)
    job.run_to_end()
    assert job.finished and not job.cancelled and job.done == 5
    assert sorted(v for v, _ in seen) == [0, 1, 4, 9, 16]
    assert all(tid != main for _, tid in seen)  # work ran in a worker thread


def test_job_cancel_runs_cleanup_and_stops():
    from anirender.addon.core.jobs import Job

    cleaned = []

    def steps():
        try:
            yield from range(100)
        finally:
            cleaned.append(True)

    job = Job("Long", steps(), total=100)
    for _ in range(3):
        job.step()
    job.cancel()
    assert job.cancelled and cleaned == [True] and job.done == 3
    assert job.step() is False


def test_job_worker_error_reaches_main_thread():
    from anirender.addon.core.jobs import Job

    def fail():
        raise AniRenderError("service went away")

    def steps(job):
        job.submit(fail)
        yield "sent"

    job = Job("Failing", steps, total=1)
    with pytest.raises(AniRenderError, match="service went away"):
        job.run_to_end()
