"""Find a character (an armature and the meshes it deforms) and the scene's camera."""

from __future__ import annotations

from dataclasses import dataclass, field

import bpy

from ...errors import AniRenderError


@dataclass
class Character:
    """An armature and every mesh it deforms (or loose meshes with no armature)."""

    armature: bpy.types.Object | None
    meshes: list[bpy.types.Object] = field(default_factory=list)

    @property
    def name(self) -> str:
        if self.armature is not None:
            return self.armature.name
        return self.meshes[0].name if self.meshes else "(empty)"

    @property
    def owner(self) -> bpy.types.Object:
        """The object that stores the character's settings (armature, else first mesh)."""
        return self.armature if self.armature is not None else self.meshes[0]


def _is_under(obj: bpy.types.Object, ancestor: bpy.types.Object) -> bool:
    parent = obj.parent
    while parent is not None:
        if parent == ancestor:
            return True
        parent = parent.parent
    return False


def _armature_of(mesh: bpy.types.Object) -> bpy.types.Object | None:
    for mod in mesh.modifiers:
        if mod.type == "ARMATURE" and mod.object is not None:
            return mod.object
    parent = mesh.parent
    while parent is not None:
        if parent.type == "ARMATURE":
            return parent
        parent = parent.parent
    return None


def meshes_deformed_by(armature: bpy.types.Object) -> list[bpy.types.Object]:
    """Every mesh driven by ``armature`` through an Armature modifier or parenting."""
    found = []
    for obj in bpy.data.objects:
        if obj.type != "MESH":
            continue
        by_modifier = any(m.type == "ARMATURE" and m.object == armature for m in obj.modifiers)
        if by_modifier or _is_under(obj, armature):
            found.append(obj)
    return sorted(found, key=lambda o: o.name)


def find_character(target) -> Character:
    """The character for an armature, a mesh, or a list of selected objects.

    A mesh leads to the armature that deforms it; meshes with no armature form a
    character on their own.
    """
    objects = list(target) if isinstance(target, (list, tuple, set)) else [target]
    objects = [o for o in objects if o is not None]
    if not objects:
        raise AniRenderError(
            "No character selected. Select the character's armature (or its meshes) first."
        )
    armatures = [o for o in objects if o.type == "ARMATURE"]
    if not armatures:
        armatures = [a for a in (_armature_of(o) for o in objects if o.type == "MESH") if a]
    if armatures:
        armature = armatures[0]
        meshes = meshes_deformed_by(armature)
        if not meshes:
            raise AniRenderError(
                f'Armature "{armature.name}" deforms no meshes. Give the character\'s meshes '
                "an Armature modifier pointing at it (or parent them to it)."
            )
        return Character(armature, meshes)
    meshes = [o for o in objects if o.type == "MESH"]
    if not meshes:
        names = ", ".join(o.name for o in objects)
        raise AniRenderError(
            f"The selection ({names}) holds no armature and no mesh. Select a character."
        )
    return Character(None, sorted(meshes, key=lambda o: o.name))


def character_from_context(context) -> Character:
    """The character of the active object, else of the selection."""
    active = context.active_object
    if active is not None and active.type in {"ARMATURE", "MESH"}:
        return find_character(active)
    return find_character(list(context.selected_objects))


def require_camera(scene) -> bpy.types.Object:
    """The scene's active camera, or an error that says how to set one."""
    cam = scene.camera
    if cam is None or cam.type != "CAMERA":
        raise AniRenderError(
            f'Scene "{scene.name}" has no active camera. Add a camera and make it '
            "active (View > Cameras > Set Active Object as Camera)."
        )
    return cam


def scene_character(scene, name: str | None = None):
    """The character to render: the named armature, else the only rigged one in ``scene``."""
    if name:
        obj = scene.objects.get(name)
        if obj is None:
            raise AniRenderError(f'No object named "{name}" in scene "{scene.name}".')
        return find_character(obj)
    armatures = [o for o in scene.objects if o.type == "ARMATURE" and deformed_meshes(o, scene)]
    if not armatures:
        raise AniRenderError(
            f'Scene "{scene.name}" has no character: no armature that deforms a mesh. '
            "Rig the character (Armature modifier or parenting) and try again."
        )
    if len(armatures) > 1:
        names = ", ".join(a.name for a in armatures)
        raise AniRenderError(
            f'Scene "{scene.name}" has several characters ({names}); name the one to render.'
        )
    return find_character(armatures[0])


def deformed_meshes(armature, scene=None) -> list:
    """The mesh objects of ``scene`` that ``armature`` moves (modifier or parenting)."""
    scene = scene or bpy.context.scene
    in_scene = scene.objects
    return [m for m in meshes_deformed_by(armature) if in_scene.get(m.name) == m]
