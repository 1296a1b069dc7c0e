"""Passes of the MakeHuman walk: a real rig (A-pose rest, 13k vertices, walk cycle)."""

import numpy as np

from anirender.addon.passes import canonical

SIZE = 128


def _render(scene, armature, out, frames, passes, fast):
    from anirender.addon.passes.renderer import render_udp_passes
    from anirender.addon.passes.request import PassRequest

    request = PassRequest(out, list(frames), passes, ("npz",), fast, (SIZE, SIZE))
    renderer, steps = render_udp_passes(scene, armature, request)
    with renderer:
        images = {frame: renderer.render_and_write(frame) for frame in renderer.todo}
    steps.close()
    return images


def test_a_pose_rig_is_recognised_and_not_lowered_again(makehuman_character):
    arms = canonical.find_upper_arms(makehuman_character)
    assert arms == ("upperarm01.L", "upperarm01.R")
    angle = canonical.arm_angle(makehuman_character, arms[0])
    assert 30 < angle < 60  # MakeHuman's default rig rests in an A-pose
    canonical.set_canonical_pose(makehuman_character, "REST")
    rest = np.array([d.vector for d in _attribute(makehuman_character)])
    recipe = canonical.set_canonical_pose(makehuman_character, "A_POSE")
    a_pose = np.array([d.vector for d in _attribute(makehuman_character)])
    assert recipe["arm_angle"] == angle
    # turned by a few degrees to exactly 45, not lowered by another 45
    assert 0.001 < np.abs(a_pose - rest).max() < 0.08


def _attribute(armature):
    (body,) = canonical.deformed_meshes(armature)
    return body.data.attributes[canonical.ATTRIBUTE].data


def test_walk_fast_and_cycles_agree_and_a_point_keeps_its_colour(
    makehuman_character, tmp_path, artifacts_dir
):
    import bpy
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Matrix
    from PIL import Image

    from anirender.addon.passes.files import preview

    scene = bpy.context.scene
    canonical.set_canonical_pose(makehuman_character)
    frames = (scene.frame_start + 5, scene.frame_start + 25)
    passes = ("udp", "uv", "normal", "depth")
    cycles = _render(scene, makehuman_character, tmp_path / "c", frames, passes, False)
    fast = _render(scene, makehuman_character, tmp_path / "f", frames, passes, True)
    for frame in frames:
        a, b = cycles[frame]["udp"], fast[frame]["udp"]
        occupancy_a, occupancy_b = a[..., 3] > 0, b[..., 3] > 0
        assert occupancy_a.mean() > 0.03
        assert (occupancy_a == occupancy_b).mean() >= 0.99
        both = occupancy_a & occupancy_b
        close = np.abs(a[both, :3] - b[both, :3]).max(axis=1) < 1e-3
        assert close.mean() >= 0.999  # a pixel centre on a silhouette fold may differ
    Image.fromarray(
        (
            np.concatenate(
                [
                    np.concatenate([preview(n, run[f][n])[..., :3] for n in passes], axis=1)
                    for f in frames
                    for run in (cycles, fast)
                ]
            )
            * 255
        )
        .round()
        .astype(np.uint8)
    ).save(artifacts_dir / "passes_makehuman_walk_cycles_vs_fast.png")

    # a chest point: same UDP colour in two frames of the walk and from two cameras
    (body,) = canonical.deformed_meshes(makehuman_character)
    co = np.array([v.co for v in body.data.vertices])
    chest = np.flatnonzero((np.abs(co[:, 0]) < 0.03) & (np.abs(co[:, 2] - 1.25) < 0.03))
    vertex = int(chest[np.argmin(co[chest, 1])])
    colour = np.array(body.data.attributes[canonical.ATTRIBUTE].data[vertex].vector)
    front = scene.camera
    side = front.copy()
    scene.collection.objects.link(side)
    side.matrix_world = Matrix.Rotation(np.radians(-30), 4, "Z") @ front.matrix_world
    seen = []
    for camera in (front, side):
        scene.camera = camera
        images = _render(scene, makehuman_character, tmp_path / camera.name, frames, ("udp",), True)
        for frame in frames:
            scene.frame_set(frame)
            depsgraph = bpy.context.evaluated_depsgraph_get()
            evaluated = body.evaluated_get(depsgraph)
            point = evaluated.matrix_world @ evaluated.data.vertices[vertex].co
            ndc = world_to_camera_view(scene, camera, point)
            pixel = images[frame]["udp"][int((1 - ndc.y) * SIZE), int(ndc.x * SIZE)]
            assert pixel[3] == 1.0
            seen.append(pixel[:3])
    assert np.abs(np.array(seen) - colour).max() < 0.02, (seen, colour)
