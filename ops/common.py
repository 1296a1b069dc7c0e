"""What the operators share: which character they act on, which frames, and the scene's
defaults for settings the caller left unset."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, IntProperty

from ..addon.characters.finding import Character, character_from_context, scene_character
from ..errors import AniRenderError


def rigged_character(context, doing: str) -> Character:
    """The character of the active object or selection, else the scene's only rigged
    character; it must have an armature. ``doing`` ends the error ("to render UDP
    passes")."""
    if context.active_object is None and not context.selected_objects:
        character = scene_character(context.scene)  # nothing picked: the only character
    else:
        character = character_from_context(context)
    if character.armature is None:
        raise AniRenderError(
            f'"{character.name}" has no armature. Select the rigged character (its armature '
            f"or one of its meshes) {doing}."
        )
    return character


class FrameRangeSettings:
    """The scene's frame range, or a range of the operator's own."""

    use_scene_range: BoolProperty(name="Scene Frame Range", default=True)
    frame_start: IntProperty(name="Start", default=1)
    frame_end: IntProperty(name="End", default=1)

    def frames(self, scene) -> list[int]:
        if self.use_scene_range:
            first, last = scene.frame_start, scene.frame_end
        else:
            first, last = self.frame_start, self.frame_end
        if last < first:
            raise AniRenderError(f"The frame range {first}-{last} is empty; end before start.")
        return list(range(first, last + 1))


def take_scene_defaults(operator: bpy.types.Operator, settings, names) -> None:
    """Copy ``settings``' values into the operator's properties the caller did not set.

    ``names`` lists property names, or maps operator property -> setting name."""
    if settings is None:
        return
    pairs = names.items() if isinstance(names, dict) else ((n, n) for n in names)
    for prop, setting in pairs:
        if not operator.properties.is_property_set(prop) and hasattr(settings, setting):
            setattr(operator, prop, getattr(settings, setting))
