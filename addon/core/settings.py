"""Typed getters for the add-on's settings: read them here, never through ``getattr`` chains.

``Scene.anirender`` (``props.SceneSettings``) holds the operators' per-scene defaults:
``passes`` (``PassSettings``), ``neural`` (``NeuralRenderSettings``), ``anr``
(``AnrSettings``), ``sheet_views`` (``SheetViewSettings``). ``Object.anirender``
(``props.CharacterSettings``) holds a character's own settings on its armature (or
first mesh): ``sheet`` (with each view's UDP file), ``paint_over_dir`` and ``morphs``
(``MorphSettings``). Every getter answers None where the add-on is not registered
(a script or a test calling the logic directly), so callers fall back to defaults.
"""

from __future__ import annotations


def scene_settings(scene):
    """``SceneSettings`` of ``scene``, or None."""
    return getattr(scene, "anirender", None)


def pass_defaults(scene):
    """``PassSettings``: the Render UDP Passes defaults of ``scene``, or None."""
    settings = scene_settings(scene)
    return settings.passes if settings is not None else None


def neural_defaults(scene):
    """``NeuralRenderSettings``: the Neural Render defaults of ``scene``, or None."""
    settings = scene_settings(scene)
    return settings.neural if settings is not None else None


def sheet_view_defaults(scene):
    """``SheetViewSettings``: the Render Sheet Views defaults of ``scene``, or None."""
    settings = scene_settings(scene)
    return settings.sheet_views if settings is not None else None


def anr_defaults(scene):
    """``AnrSettings``: the ANR operators' defaults of ``scene``, or None."""
    settings = scene_settings(scene)
    return settings.anr if settings is not None else None


def character_settings(owner):
    """``CharacterSettings`` stored on a character's armature (or first mesh), or None."""
    return getattr(owner, "anirender", None)


def morph_settings(owner):
    """``MorphSettings``: the pose sliders' bindings and preview of a character, or None."""
    settings = character_settings(owner)
    return settings.morphs if settings is not None else None
