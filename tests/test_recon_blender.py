"""File > Import > Portrait Reconstruction in real Blender: the known head from each format
arrives in place, facing -Y, coloured, real size; on a rig; with the portrait projected;
bad files leave the scene exactly as it was."""

import numpy as np
import pytest
from recon_head import (
    EAR,
    NOSE,
    SKIN,
    chamfer,
    write_eg3d_mrc,
    write_glb,
    write_obj,
    write_panic_pickle,
    write_ply,
    write_splat_ply,
)

from anirender.models.recon.portrait import blender_to_source

WRITERS = {
    "front.pkl": (write_panic_pickle, 96),
    "seed.mrc": (write_eg3d_mrc, 95),
    "head.obj": (write_obj, 63),
    "head.ply": (write_ply, 63),
    "head.glb": (write_glb, 63),
}


def _arrays(obj):
    data = obj.data
    verts = np.empty(len(data.vertices) * 3)
    data.vertices.foreach_get("co", verts)
    verts = verts.reshape(-1, 3)
    matrix = np.array(obj.matrix_world)
    verts = verts @ matrix[:3, :3].T + matrix[:3, 3]
    normals = np.empty(len(data.vertices) * 3)
    data.vertices.foreach_get("normal", normals)
    colors = None
    if "Col" in data.color_attributes:
        colors = np.empty(len(data.vertices) * 4)
        data.color_attributes["Col"].data.foreach_get("color_srgb", colors)
        colors = colors.reshape(-1, 4)[:, :3]
    return verts, normals.reshape(-1, 3), colors


def _counts(bpy):
    return {
        name: len(getattr(bpy.data, name))
        for name in ("objects", "meshes", "materials", "images", "collections")
    }


def _shows_vertex_colours(obj):
    material = obj.data.materials[0]
    base = material.node_tree.nodes["Principled BSDF"].inputs["Base Color"]
    source = base.links[0].from_node
    return source.bl_idname == "ShaderNodeVertexColor" and source.layer_name == "Col"


def test_listed_in_file_import_menu(addon):
    import bpy

    from anirender.panels.menus import draw_import_menu

    assert draw_import_menu in bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize()


@pytest.mark.parametrize("name", list(WRITERS))
def test_import_each_format_in_file_units(addon, tmp_path, name):
    import bpy

    writer, cells = WRITERS[name]
    path = tmp_path / name
    box = writer(path)
    before = set(bpy.data.objects)
    result = bpy.ops.anirender.import_portrait(filepath=str(path), size_mode="KEEP", faces="CLEAN")
    assert result == {"FINISHED"}
    (obj,) = [o for o in bpy.data.objects if o not in before]
    assert bpy.context.view_layer.objects.active == obj
    verts, normals, colors = _arrays(obj)
    assert chamfer(blender_to_source(verts), box) < box / cells
    nose = verts[verts[:, 1].argmin()]
    assert abs(nose[0]) < 0.05 * box and nose[1] < -0.25 * box
    outward = np.einsum("ij,ij->i", normals, verts - verts.mean(0))
    assert (outward > 0).mean() > 0.95
    if name.endswith(".mrc"):
        assert colors is None  # EG3D shapes carry no colour
        return
    assert _shows_vertex_colours(obj)
    assert np.allclose(colors[verts[:, 1].argmin()], NOSE, atol=0.15)
    assert np.allclose(colors[verts[:, 0].argmax()], EAR, atol=0.15)
    assert np.allclose(colors[verts[:, 2].argmax()], SKIN, atol=0.15)


def test_textured_obj_gets_its_texture_as_colours(addon, tmp_path):
    """TripoSR-style OBJ + MTL + texture: left half of the head red, right half blue."""
    import bpy
    from PIL import Image
    from recon_head import head_mesh

    verts, faces, _ = head_mesh(48, 1.0)
    u = np.where(verts[:, 0] < 0, 0.25, 0.75)
    texture = np.zeros((8, 8, 3), np.uint8)
    texture[:, :4] = (230, 20, 20)
    texture[:, 4:] = (20, 20, 230)
    Image.fromarray(texture).save(tmp_path / "albedo.png")
    (tmp_path / "head.mtl").write_text("newmtl skin\nKd 1 1 1\nmap_Kd albedo.png\n")
    with open(tmp_path / "head.obj", "w") as f:
        f.write("mtllib head.mtl\n")
        np.savetxt(f, verts, fmt="v %.6f %.6f %.6f")
        np.savetxt(f, np.stack([u, np.full_like(u, 0.5)], 1), fmt="vt %.3f %.3f")
        f.write("usemtl skin\n")
        np.savetxt(f, np.repeat(faces + 1, 2, axis=1), fmt="f %d/%d %d/%d %d/%d")
    before = _counts(bpy)
    result = bpy.ops.anirender.import_portrait(filepath=str(tmp_path / "head.obj"), faces="CLEAN")
    assert result == {"FINISHED"}
    after = _counts(bpy)
    assert after["images"] == before["images"]  # the importer's leftovers are gone
    assert after["objects"] == before["objects"] + 1
    obj = bpy.context.view_layer.objects.active
    verts, _, colors = _arrays(obj)
    left, right = verts[:, 0] < -0.05, verts[:, 0] > 0.05
    assert np.allclose(colors[left].mean(0), [0.9, 0.08, 0.08], atol=0.05)
    assert np.allclose(colors[right].mean(0), [0.08, 0.08, 0.9], atol=0.05)


def _rig(bpy):
    data = bpy.data.armatures.new("Rig")
    rig = bpy.data.objects.new("Rig", data)
    bpy.context.collection.objects.link(rig)
    rig.location = (0.3, 0.0, 0.0)
    bpy.context.view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="EDIT")
    for name, head, tail, parent in (
        ("Hips", (0, 0, 1.0), (0, 0, 1.2), None),
        ("Neck", (0, 0, 1.4), (0, 0, 1.5), "Hips"),
        ("Head", (0, 0, 1.5), (0, 0, 1.7), "Neck"),
    ):
        bone = data.edit_bones.new(name)
        bone.head, bone.tail = head, tail
        if parent:
            bone.parent = data.edit_bones[parent]
    bpy.ops.object.mode_set(mode="OBJECT")
    rig.select_set(True)
    return rig


def test_attach_to_head_bone_at_real_size(addon, tmp_path):
    import bpy

    path = tmp_path / "front.pkl"
    write_panic_pickle(path)
    rig = _rig(bpy)
    result = bpy.ops.anirender.import_portrait(
        filepath=str(path), size_mode="FIT", head_width_cm=25, use_attach_to_head=True
    )
    assert result == {"FINISHED"}
    obj = bpy.context.view_layer.objects.active
    assert obj.parent == rig and obj.parent_type == "BONE" and obj.parent_bone == "Head"
    verts, _, _ = _arrays(obj)
    low, high = verts.min(0), verts.max(0)
    assert high[0] - low[0] == pytest.approx(0.25, abs=1e-4)
    assert np.allclose(
        [(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]], [0.3, 0, 1.5], atol=1e-4
    )
    # the head follows the bone
    rig.pose.bones["Head"].location = (0, 0.1, 0)  # along the bone's local Y = world +Z
    bpy.context.view_layer.update()
    assert _arrays(obj)[0].min(0)[2] == pytest.approx(1.6, abs=1e-4)


def _portrait_png(path, size=64):
    """A front view: a green face disc on a transparent background."""
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size]
    disc = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) < (0.3 * size) ** 2
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[disc] = (40, 200, 60, 255)
    Image.fromarray(rgba).save(path)


def _render(bpy, obj, path):
    scene = bpy.context.scene
    for other in [o for o in scene.objects if o.type in ("MESH", "LIGHT") and o != obj]:
        bpy.data.objects.remove(other)  # the factory cube would hide a 25 cm head
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 8
    scene.render.resolution_x = scene.render.resolution_y = 160
    scene.render.film_transparent = False
    cam_data = bpy.data.cameras.new("Cam")
    cam_data.type = "ORTHO"
    verts = _arrays(obj)[0]
    centre = (verts.min(0) + verts.max(0)) / 2
    cam_data.ortho_scale = float(np.ptp(verts, 0).max()) * 1.3
    cam = bpy.data.objects.new("Cam", cam_data)
    bpy.context.collection.objects.link(cam)
    # three-quarter front view, looking at the face (which looks toward -Y)
    from mathutils import Vector

    eye = Vector(centre) + Vector((0.6, -1.0, 0.25)).normalized() * 2.0
    cam.location = eye
    cam.rotation_euler = (Vector(centre) - eye).to_track_quat("-Z", "Y").to_euler()
    scene.camera = cam
    light = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    light.rotation_euler = cam.rotation_euler
    bpy.context.collection.objects.link(light)
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)


def test_project_portrait_and_render(addon, tmp_path, artifacts_dir):
    import bpy

    path = tmp_path / "marching_cubes" / "front.pkl"
    path.parent.mkdir()
    write_panic_pickle(path)
    (tmp_path / "ortho").mkdir()
    _portrait_png(tmp_path / "ortho" / "front.png")  # PAniC-3D's layout: found by itself
    result = bpy.ops.anirender.import_portrait(filepath=str(path), use_project_portrait=True)
    assert result == {"FINISHED"}
    obj = bpy.context.view_layer.objects.active
    data = obj.data
    assert "PortraitFront" in data.uv_layers and "PortraitFacing" in data.color_attributes
    verts, _, _ = _arrays(obj)
    facing = np.empty(len(verts) * 4)
    data.color_attributes["PortraitFacing"].data.foreach_get("color", facing)
    facing = facing.reshape(-1, 4)[:, 0]
    assert facing[verts[:, 1].argmin()] > 0.9  # the nose tip sees the viewer
    assert facing[verts[:, 1].argmax()] == 0.0  # the back of the head does not
    nodes = data.materials[0].node_tree.nodes
    assert any(n.bl_idname == "ShaderNodeTexImage" and n.image for n in nodes)
    _render(bpy, obj, artifacts_dir / "recon_portrait_projected.png")
    assert (artifacts_dir / "recon_portrait_projected.png").stat().st_size > 1000


def test_render_vertex_coloured_head(addon, tmp_path, artifacts_dir):
    import bpy

    path = tmp_path / "front.pkl"
    write_panic_pickle(path)
    bpy.ops.anirender.import_portrait(filepath=str(path), smooth_iterations=3)
    obj = bpy.context.view_layer.objects.active
    out = artifacts_dir / "recon_panic_head.png"
    _render(bpy, obj, out)
    from PIL import Image

    pixels = np.asarray(Image.open(out).convert("RGB"), dtype=float)
    reddish = (pixels[..., 0] > 1.6 * pixels[..., 2]) & (pixels[..., 0] > 80)
    bluish = pixels[..., 2] > 1.6 * pixels[..., 0]
    assert reddish.sum() > 20 and bluish.sum() > 20  # nose and ear colours reach the render


def test_splat_ply_imports_as_points(addon, tmp_path):
    import bpy

    path = tmp_path / "lgm.ply"
    write_splat_ply(path)
    assert bpy.ops.anirender.import_portrait(filepath=str(path)) == {"FINISHED"}
    obj = bpy.context.view_layer.objects.active
    assert len(obj.data.vertices) == 500 and len(obj.data.polygons) == 0


def test_bad_inputs_leave_the_scene_untouched(addon, tmp_path):
    import pickle

    import bpy

    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"verts": Exploit()}))
    write_eg3d_mrc(tmp_path / "good.mrc")
    (tmp_path / "cut.mrc").write_bytes((tmp_path / "good.mrc").read_bytes()[:6000])
    np.save(tmp_path / "flat.npy", np.full((16, 16, 16), 5.0, np.float32))
    nan = np.ones((16, 16, 16), np.float32)
    nan[1, 2, 3] = np.inf
    np.save(tmp_path / "nan.npy", nan)
    write_panic_pickle(tmp_path / "front.pkl")
    cases = [
        ({"filepath": str(tmp_path / "evil.pkl")}, "asks to run code"),
        ({"filepath": str(tmp_path / "cut.mrc")}, "cut.mrc"),
        ({"filepath": str(tmp_path / "flat.npy")}, "no surface at level"),
        ({"filepath": str(tmp_path / "nan.npy")}, "NaN or infinite"),
        ({"filepath": str(tmp_path / "missing.pkl")}, "no such file"),
        (
            {"filepath": str(tmp_path / "front.pkl"), "use_project_portrait": True},
            "needs the front view image",
        ),
        (
            {
                "filepath": str(tmp_path / "front.pkl"),
                "use_project_portrait": True,
                "portrait_path": str(tmp_path / "nope.png"),
            },
            "no such file",
        ),
        (
            {"filepath": str(tmp_path / "front.pkl"), "use_attach_to_head": True},
            "select the character's armature",
        ),
    ]
    before = _counts(bpy)
    for kwargs, message in cases:
        with pytest.raises(RuntimeError, match=message):
            bpy.ops.anirender.import_portrait(**kwargs)
        assert _counts(bpy) == before, kwargs
    assert not (tmp_path / "pwned").exists()


def test_import_job_steps_off_the_main_thread_and_esc_adds_nothing(addon, tmp_path):
    """The operator's job, driven step by step as the modal timer does: meshing is a worker
    task (the main thread is free while it runs), and cancelling midway adds nothing."""
    import bpy

    from anirender.addon.core.guard import SceneGuard, scene_snapshot
    from anirender.addon.portrait.importing import plan_portrait_import, portrait_import_job
    from anirender.models.recon.portrait import PortraitImportOptions

    path = tmp_path / "seed.mrc"
    write_eg3d_mrc(path)
    context = bpy.context
    before, counts = scene_snapshot(context), _counts(bpy)

    with SceneGuard(context) as guard:
        plan = plan_portrait_import(path, PortraitImportOptions(), context.collection)
        job = portrait_import_job(plan, guard)
        assert job.step() and job.message == "Reading and meshing seed.mrc"
        assert job.busy_waiting  # the volume is meshed by a worker, not in this step
        while job.done < 2:  # through meshing, into cleaning: Esc here
            assert job.step()
        assert job.message == "Cleaning the mesh" and plan.obj is None
        job.cancel()
        assert job.cancelled and job.step() is False
    assert _counts(bpy) == counts and scene_snapshot(context) == before

    with SceneGuard(context) as guard:
        plan = plan_portrait_import(path, PortraitImportOptions(), context.collection)
        job = portrait_import_job(plan, guard)
        messages = []
        while job.step():
            if job.message not in messages:
                messages.append(job.message)
    assert messages == ["Reading and meshing seed.mrc", "Cleaning the mesh", "Building the mesh"]
    assert job.done == job.total and not job.cancelled
    assert plan.obj.name in bpy.data.objects and len(plan.obj.data.polygons) > 100
    assert _counts(bpy)["objects"] == counts["objects"] + 1
