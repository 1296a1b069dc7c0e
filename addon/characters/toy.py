"""A small procedural rigged humanoid that every test can build in a fraction of a second.

The toy stands 1.68 m tall on the ground, faces -Y (its left side, ``.L``, is at +X) and
is modelled in a T-pose (arms horizontal) so that tests can derive an A-pose from it.
Three skinned meshes ("Body", "Skirt", "Hair") follow one armature; the Body carries
MMD-style Japanese shape keys and the armature plays the 24-frame action "ToyWave".

Bones (all deform except ``root``):
root > hips > spine > chest > neck > head, chest > shoulder.L/R > upper_arm.L/R >
forearm.L/R > hand.L/R, hips > thigh.L/R > shin.L/R > foot.L/R.
"""

import math

import bpy
import numpy as np

# name: (head, tail, parent, connected); metres, Z up, character faces -Y.
_BONES = {
    "root": ((0, 0, 0), (0, 0.25, 0), None, False),
    "hips": ((0, 0, 0.92), (0, 0, 1.02), "root", False),
    "spine": ((0, 0, 1.02), (0, 0, 1.16), "hips", True),
    "chest": ((0, 0, 1.16), (0, 0, 1.38), "spine", True),
    "neck": ((0, 0, 1.38), (0, 0, 1.47), "chest", True),
    "head": ((0, 0, 1.47), (0, 0, 1.68), "neck", True),
}
for _side, _s in (("L", 1.0), ("R", -1.0)):
    _BONES.update(
        {
            f"shoulder.{_side}": ((0.03 * _s, 0, 1.35), (0.16 * _s, 0, 1.35), "chest", False),
            f"upper_arm.{_side}": (
                (0.16 * _s, 0, 1.35),
                (0.44 * _s, 0, 1.35),
                f"shoulder.{_side}",
                True,
            ),
            f"forearm.{_side}": (
                (0.44 * _s, 0, 1.35),
                (0.69 * _s, 0, 1.35),
                f"upper_arm.{_side}",
                True,
            ),
            f"hand.{_side}": ((0.69 * _s, 0, 1.35), (0.80 * _s, 0, 1.35), f"forearm.{_side}", True),
            f"thigh.{_side}": ((0.09 * _s, 0, 0.92), (0.09 * _s, 0, 0.50), "hips", False),
            f"shin.{_side}": ((0.09 * _s, 0, 0.50), (0.09 * _s, 0, 0.09), f"thigh.{_side}", True),
            f"foot.{_side}": (
                (0.09 * _s, 0, 0.09),
                (0.09 * _s, -0.15, 0.02),
                f"shin.{_side}",
                True,
            ),
        }
    )

HEAD_CENTRE = np.array([0.0, 0.0, 1.575])
HEAD_RADIUS = 0.105
SHAPE_KEYS = ("まばたき", "あ", "ウィンク", "怒り")
ACTION_NAME = "ToyWave"
FRAME_RANGE = (1, 24)


def build_toy_character(scene=None, name: str = "Toy") -> bpy.types.Object:
    """Build the toy character in ``scene`` (default: the current one); return its armature."""
    scene = scene or bpy.context.scene
    armature = _build_armature(scene, name)
    body = _skinned_mesh(scene, armature, "Body", _body_parts(), (0.93, 0.76, 0.66, 1.0))
    _add_face_shape_keys(body)
    _skinned_mesh(scene, armature, "Skirt", [_skirt_part()], (0.15, 0.22, 0.55, 1.0))
    _skinned_mesh(scene, armature, "Hair", [_hair_part()], (0.85, 0.35, 0.55, 1.0))
    _add_wave_action(armature)
    return armature


# ---------------------------------------------------------------------------- armature


def _build_armature(scene, name):
    data = bpy.data.armatures.new(name)
    armature = bpy.data.objects.new(name, data)
    scene.collection.objects.link(armature)
    # Edit bones exist only in edit mode, which needs the object active in a view layer.
    view_layer = scene.view_layers[0]
    previous = view_layer.objects.active
    view_layer.objects.active = armature
    with bpy.context.temp_override(scene=scene, view_layer=view_layer, active_object=armature):
        bpy.ops.object.mode_set(mode="EDIT")
        for bone_name, (head, tail, parent, connected) in _BONES.items():
            bone = data.edit_bones.new(bone_name)
            bone.head, bone.tail, bone.roll = head, tail, 0.0
            if parent:
                bone.parent = data.edit_bones[parent]
                bone.use_connect = connected
        data.edit_bones["root"].use_deform = False
        bpy.ops.object.mode_set(mode="OBJECT")
    view_layer.objects.active = previous
    return armature


# ---------------------------------------------------------------------------- geometry


def _tube(path, radii, segments, bones, uv_tile, cap=True):
    """A closed tube around a polyline; ``radii`` gives (rx, ry) per path point.

    The cross-section lies in the plane perpendicular to the path, so limbs and torso use
    the same code; ``cap`` closes both ends with a fan. Returns a part dict: verts, faces
    (vertex indices), per-corner uvs (the seam column unwrapped to u = 1), the ``bones``
    that weight it and its ``tile`` in the UV atlas.
    """
    path = np.asarray(path, float)
    radii = np.asarray(radii, float)
    rings = len(path)
    angles = np.linspace(0, 2 * math.pi, segments, endpoint=False)
    verts = []
    for i in range(rings):
        direction = path[min(i + 1, rings - 1)] - path[max(i - 1, 0)]
        direction /= np.linalg.norm(direction)
        # Side axis: horizontal where possible, so ellipses face the camera the same way.
        helper = np.array([0.0, 0.0, 1.0]) if abs(direction[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        a = np.cross(helper, direction)
        a /= np.linalg.norm(a)
        b = np.cross(direction, a)
        rx, ry = radii[i]
        ring = path[i] + np.outer(np.cos(angles) * rx, a) + np.outer(np.sin(angles) * ry, b)
        verts.append(ring)
    verts = np.concatenate(verts)
    faces, uvs = [], []
    for i in range(rings - 1):
        for j in range(segments):
            idx = [i * segments + j, i * segments + (j + 1) % segments]
            idx += [(i + 1) * segments + (j + 1) % segments, (i + 1) * segments + j]
            faces.append(idx)
            uvs.append([(j, i), (j + 1, i), (j + 1, i + 1), (j, i + 1)])
    uvs = np.asarray(uvs, float) / [segments, max(rings - 1, 1)]
    if cap:
        n = len(verts)
        verts = np.concatenate([verts, path[[0, -1]]])
        for ring, centre, flip in ((0, n, True), (rings - 1, n + 1, False)):
            for j in range(segments):
                tri = [ring * segments + j, ring * segments + (j + 1) % segments, centre]
                faces.append(tri[::-1] if flip else tri)
                uvs = np.concatenate(
                    [
                        uvs,
                        [[[j / segments, 0.0], [(j + 1) / segments, 0.0], [0.5, 0.0], [0.5, 0.0]]],
                    ]
                )
    return {"verts": verts, "faces": faces, "uvs": uvs, "bones": bones, "tile": uv_tile}


def _sphere(centre, radius, segments, rings, bones, uv_tile, theta_max=None, scale=(1, 1, 1)):
    """A UV sphere (or a cap of one when ``theta_max`` limits the polar angle per azimuth)."""
    phis = np.linspace(0, 2 * math.pi, segments, endpoint=False)
    limit = theta_max(phis) if theta_max else np.full(segments, math.pi)
    verts = [np.asarray(centre) + [0, 0, radius * scale[2]]]
    for i in range(1, rings + 1):
        theta = limit * i / rings
        ring = np.stack(
            [np.sin(theta) * np.cos(phis), np.sin(theta) * np.sin(phis), np.cos(theta)], axis=1
        )
        verts.append(np.asarray(centre) + ring * radius * np.asarray(scale))
    closed = theta_max is None
    if closed:  # drop the last ring at the south pole, replace it with a single vertex
        verts = verts[:-1] + [np.asarray(centre) - [0, 0, radius * scale[2]]]
    verts = np.concatenate([np.atleast_2d(v) for v in verts])
    faces, uvs = [], []
    last_ring = rings - 1 if closed else rings
    for j in range(segments):
        faces.append([0, 1 + j, 1 + (j + 1) % segments])
        uvs.append([(j + 0.5, 0), (j, 1), (j + 1, 1), (j + 1, 1)])
    for i in range(1, last_ring):
        for j in range(segments):
            a = 1 + (i - 1) * segments
            b = 1 + i * segments
            faces.append([a + j, b + j, b + (j + 1) % segments, a + (j + 1) % segments])
            uvs.append([(j, i), (j, i + 1), (j + 1, i + 1), (j + 1, i)])
    if closed:
        south = len(verts) - 1
        a = 1 + (last_ring - 1) * segments
        for j in range(segments):
            faces.append([a + j, south, a + (j + 1) % segments])
            uvs.append([(j, last_ring), (j + 0.5, rings), (j + 1, last_ring), (j + 1, last_ring)])
    uvs = np.asarray(uvs, float) / [segments, rings]
    return {"verts": verts, "faces": faces, "uvs": uvs, "bones": bones, "tile": uv_tile}


def _body_parts():
    parts = [
        _tube(  # torso from the crotch to the base of the neck
            [(0, 0, z) for z in (0.84, 0.90, 0.98, 1.06, 1.14, 1.22, 1.30, 1.37, 1.42)],
            [(0.10, 0.10), (0.15, 0.10), (0.16, 0.10), (0.13, 0.085), (0.125, 0.085)]
            + [(0.14, 0.095), (0.16, 0.10), (0.15, 0.09), (0.07, 0.06)],
            16,
            ["hips", "spine", "chest"],
            (0, 0),
        ),
        _tube(
            [(0, 0, z) for z in (1.38, 1.43, 1.48, 1.52)],
            [(0.045, 0.045)] * 4,
            12,
            ["chest", "neck", "head"],
            (1, 0),
        ),
        _sphere(HEAD_CENTRE, HEAD_RADIUS, 32, 20, ["head"], (2, 0), scale=(0.9, 1.0, 1.1)),
    ]
    for side, s in (("L", 1.0), ("R", -1.0)):
        xs = (0.10, 0.16, 0.28, 0.40, 0.44, 0.48, 0.60, 0.69, 0.75, 0.80)
        radii = [(0.06, 0.06), (0.055, 0.05), (0.048, 0.045), (0.042, 0.04), (0.04, 0.038)]
        radii += [(0.038, 0.036), (0.033, 0.032), (0.03, 0.028), (0.045, 0.015), (0.035, 0.012)]
        parts.append(
            _tube(
                [(x * s, 0, 1.35) for x in xs],
                radii,
                12,
                [f"shoulder.{side}", f"upper_arm.{side}", f"forearm.{side}", f"hand.{side}"],
                (0, 1) if s > 0 else (1, 1),
            )
        )
        zs = (0.95, 0.86, 0.72, 0.58, 0.50, 0.42, 0.28, 0.14, 0.08)
        radii = [(0.085, 0.085), (0.085, 0.085), (0.075, 0.075), (0.06, 0.06), (0.055, 0.055)]
        radii += [(0.055, 0.055), (0.048, 0.05), (0.04, 0.042), (0.04, 0.04)]
        parts.append(
            _tube(
                [(0.09 * s, 0, z) for z in zs],
                radii,
                12,
                [f"thigh.{side}", f"shin.{side}"],
                (2, 1) if s > 0 else (3, 1),
            )
        )
        parts.append(
            _tube(
                [(0.09 * s, y, 0.045) for y in (0.04, 0.0, -0.06, -0.12, -0.17)],
                [(0.045, 0.045), (0.048, 0.045), (0.045, 0.035), (0.042, 0.028), (0.035, 0.02)],
                10,
                [f"shin.{side}", f"foot.{side}"],
                (3, 0) if s > 0 else (3, 2),
            )
        )
    return parts


def _skirt_part():
    zs = np.linspace(0.98, 0.62, 7)
    radii = [(r, r * 0.8) for r in np.linspace(0.175, 0.33, 7)]
    part = _tube(
        [(0, 0, z) for z in zs], radii, 24, ["hips", "thigh.L", "thigh.R"], (0, 0), cap=False
    )
    part["weights"] = _skirt_weights(part["verts"])
    return part


def _hair_part():
    # Covers the crown everywhere, reaches lower at the back (+Y) than over the forehead.
    def theta_max(phis):
        back = 0.5 * (1 + np.sin(phis))  # 1 at the back of the head, 0 at the face
        return 1.15 + back * 1.05

    return _sphere(
        HEAD_CENTRE + [0, 0.005, 0.01],
        HEAD_RADIUS * 1.12,
        24,
        8,
        ["head"],
        (0, 0),
        theta_max,
        (0.9, 1.0, 1.1),
    )


# ---------------------------------------------------------------------------- skinning


def _segment_distance(points, head, tail):
    d = np.asarray(tail) - np.asarray(head)
    t = np.clip(((points - head) @ d) / (d @ d), 0.0, 1.0)
    return np.linalg.norm(points - (np.asarray(head) + t[:, None] * d), axis=1)


def _part_weights(part):
    """The part's own weights, or smooth ones: inverse distance to each bone segment."""
    if "weights" in part:
        return part["weights"]
    verts = part["verts"]
    dist = np.stack([_segment_distance(verts, *_BONES[b][:2]) for b in part["bones"]], axis=1)
    w = 1.0 / np.maximum(dist, 1e-3) ** 4
    return w / w.sum(axis=1, keepdims=True)


def _skirt_weights(verts):
    """Waistband follows the hips; the hem follows each thigh by its side."""
    down = np.clip((0.98 - verts[:, 2]) / 0.36, 0.0, 1.0)
    side = np.clip(verts[:, 0] / 0.2, -1.0, 1.0)
    left = down * np.clip(0.5 + 0.5 * side, 0, 1) * 0.8
    right = down * np.clip(0.5 - 0.5 * side, 0, 1) * 0.8
    return np.stack([1.0 - left - right, left, right], axis=1)


def _skinned_mesh(scene, armature, name, parts, colour):
    verts, faces, loop_uvs, weights = [], [], [], {}
    offset = 0
    for part in parts:
        verts.append(part["verts"])
        tile = np.asarray(part["tile"], float)
        uv = (part["uvs"] * 0.96 + 0.02 + tile) / 4.0  # a 4 x 4 atlas, one tile a part
        for face, corners in zip(part["faces"], uv):
            faces.append([offset + i for i in face])
            loop_uvs.append(corners[: len(face)])
        for bone, column in zip(part["bones"], _part_weights(part).T):
            weights.setdefault(bone, []).append((np.arange(len(column)) + offset, column))
        offset += len(part["verts"])
    verts = np.concatenate(verts)

    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts.tolist(), [], faces)
    uv_layer = mesh.uv_layers.new(name="UVMap")
    uv_layer.data.foreach_set("uv", np.concatenate(loop_uvs).astype(np.float32).ravel())
    mesh.shade_smooth()
    mesh.validate()

    obj = bpy.data.objects.new(name, mesh)
    scene.collection.objects.link(obj)
    obj.parent = armature
    for bone, chunks in weights.items():
        group = obj.vertex_groups.new(name=bone)
        for index, weight in chunks:
            keep = weight > 1e-3
            for i, w in zip(index[keep].tolist(), weight[keep].tolist()):
                group.add([i], w, "REPLACE")
    modifier = obj.modifiers.new("Armature", "ARMATURE")
    modifier.object = armature
    obj.data.materials.append(_material(f"{armature.name}_{name}", colour))
    return obj


def _material(name, colour):
    material = bpy.data.materials.get(name) or bpy.data.materials.new(name)
    material.diffuse_color = colour
    bsdf = material.node_tree and material.node_tree.nodes.get("Principled BSDF")
    if bsdf:
        bsdf.inputs["Base Color"].default_value = colour
        bsdf.inputs["Roughness"].default_value = 0.6
    return material


# ---------------------------------------------------------------------------- face


def _face_point(azimuth_deg, elevation_deg):
    """A point on the head surface: azimuth 0 is straight ahead (-Y), positive to +X."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    direction = np.array([math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)])
    return HEAD_CENTRE + direction * HEAD_RADIUS * np.array([0.9, 1.0, 1.1])


def _falloff(verts, centre, radius):
    d = np.linalg.norm(verts - centre, axis=1)
    return np.clip(1.0 - d / radius, 0.0, 1.0) ** 2


def _add_face_shape_keys(body):
    mesh = body.data
    n = len(mesh.vertices)
    rest = np.empty(n * 3, np.float32)
    mesh.vertices.foreach_get("co", rest)
    rest = rest.reshape(-1, 3).astype(float)
    head_only = _head_vertex_mask(body, n)
    inward = HEAD_CENTRE - rest
    inward /= np.maximum(np.linalg.norm(inward, axis=1, keepdims=True), 1e-6)

    def eye_close(side):
        centre = _face_point(28 * side, 8)
        f = _falloff(rest, centre, 0.05) * head_only
        above = rest[:, 2] > centre[2] - 0.005
        offset = np.zeros_like(rest)
        offset[:, 2] = -0.03 * f * above + 0.01 * f * ~above  # upper lid down, lower lid up
        return offset + inward * (0.006 * f)[:, None]

    mouth = _face_point(0, -35)
    f_mouth = _falloff(rest, mouth, 0.05) * head_only
    open_mouth = np.zeros_like(rest)
    open_mouth[:, 2] = -0.025 * f_mouth * (rest[:, 2] < mouth[2])
    open_mouth += inward * (0.012 * f_mouth)[:, None]

    angry = np.zeros_like(rest)
    for side in (1, -1):
        brow = _face_point(25 * side, 22)
        f = _falloff(rest, brow, 0.045) * head_only
        angry[:, 2] -= 0.015 * f
        angry[:, 0] -= side * 0.008 * f  # draw the brows together

    body.shape_key_add(name="Basis", from_mix=False)
    for name, offset in zip(
        SHAPE_KEYS, (eye_close(1) + eye_close(-1), open_mouth, eye_close(1), angry)
    ):
        key = body.shape_key_add(name=name, from_mix=False)
        key.data.foreach_set("co", (rest + offset).astype(np.float32).ravel())
        key.value = 0.0  # Blender 5 starts new keys at 1.0
    mesh.shape_keys.name = f"{body.name}_Keys"


def _head_vertex_mask(body, n):
    """Vertices driven only by the head bone (the face), so neck and hair never move."""
    mask = np.zeros(n, bool)
    group = body.vertex_groups["head"].index
    for v in body.data.vertices:
        for g in v.groups:
            if g.group == group and g.weight > 0.99:
                mask[v.index] = True
    return mask.astype(float)


# ---------------------------------------------------------------------------- animation


def _add_wave_action(armature):
    """Right arm raised and waving from the elbow, hips swaying side to side."""
    start, end = FRAME_RANGE
    armature.animation_data_create()
    pose = armature.pose.bones
    for bone in ("upper_arm.R", "forearm.R", "hips"):
        pose[bone].rotation_mode = "XYZ"
    for frame in range(start, end + 2, 4):  # the last key repeats the first: a seamless loop
        phase = 2 * math.pi * (frame - start) / (end + 1 - start)
        # Roll 0 on a horizontal bone: local X is the world's +-Y axis, so X raises the arm.
        pose["upper_arm.R"].rotation_euler = (math.radians(50), 0.0, 0.0)
        pose["forearm.R"].rotation_euler = (math.radians(45 + 30 * math.sin(phase)), 0.0, 0.0)
        pose["hips"].location = (0.025 * math.sin(phase), 0.0, 0.0)
        pose["hips"].rotation_euler = (0.0, 0.0, math.radians(4) * math.sin(phase))
        pose["upper_arm.R"].keyframe_insert("rotation_euler", frame=frame, group="upper_arm.R")
        pose["forearm.R"].keyframe_insert("rotation_euler", frame=frame, group="forearm.R")
        pose["hips"].keyframe_insert("location", frame=frame, group="hips")
        pose["hips"].keyframe_insert("rotation_euler", frame=frame, group="hips")
    action = armature.animation_data.action
    action.name = ACTION_NAME
    action.use_frame_range = True
    action.frame_start, action.frame_end = start, end
    action.use_cyclic = True
    for bone in pose:  # leave the armature showing its rest pose outside the action
        bone.location = (0, 0, 0)
        bone.rotation_euler = (0, 0, 0)
    return action
