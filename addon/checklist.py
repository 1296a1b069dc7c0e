"""Getting started: what the next shaded frame needs, each item ready or with its fix.

Read by the top of the AniRender sidebar tab. Every check is cheap (no torch, no file
reads beyond ``stat``), since panels redraw often.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..errors import AniRenderError
from ..models.weights import resolve_weights
from .characters.finding import character_from_context, scene_character
from .core.prefs import preferences
from .core.settings import character_settings
from .passes.canonical import has_canonical
from .runtime.location import runtime_info


@dataclass(frozen=True)
class Item:
    name: str
    ready: bool
    detail: str
    fix: str = ""  # operator idname that fixes it ("" : the detail says what to do)
    fix_label: str = ""


def checklist(context) -> list[Item]:
    prefs = preferences(context)
    items = [_runtime(prefs), _weights(prefs)]
    try:
        character = character_from_context(context)
    except AniRenderError:
        try:
            character = scene_character(context.scene)
        except AniRenderError:
            character = None
    if character is None:
        items.append(
            Item("Character", False, "Select your character's armature (or a mesh it deforms)")
        )
    else:
        items.append(Item("Character", True, character.name))
        armature = character.armature
        if armature is not None:
            ready = has_canonical(armature, context.scene)
            detail = "set" if ready else "not set (it is set on the first render otherwise)"
            items.append(
                Item("Canonical pose", ready, detail, "anirender.set_canonical_pose", "Set A-Pose")
            )
        views = [e for e in character_settings(character.owner).sheet if e.image or e.filepath]
        items.append(
            Item(
                "Character sheet",
                bool(views),
                f"{len(views)} view(s)" if views else "no reference drawings yet",
                "anirender.sheet_add_files",
                "Add Image Files",
            )
        )
    camera = context.scene.camera
    items.append(
        Item(
            "Camera",
            camera is not None,
            camera.name if camera is not None else "the scene has no active camera",
            "anirender.add_camera",
            "Add Camera",
        )
    )
    return items


def _runtime(prefs) -> Item:
    mode = prefs.service_mode if prefs is not None else "IN_PROCESS"
    if mode == "REMOTE":
        return Item("Shader runtime", True, f"remote service {prefs.remote_url}")
    if mode == "LOCAL" and prefs.python_path.strip():
        exists = Path(prefs.python_path.strip()).expanduser().is_file()
        detail = prefs.python_path if exists else f"{prefs.python_path} does not exist"
        return Item("Shader runtime", exists, detail, "anirender.setup_runtime", "Set Up")
    if mode == "IN_PROCESS" and importlib.util.find_spec("torch") is not None:
        return Item("Shader runtime", True, "torch in this Python")
    info = runtime_info()
    if info is not None:
        return Item("Shader runtime", True, f"torch {info.get('build', '').upper()}")
    return Item("Shader runtime", False, "torch is not set up", "anirender.setup_runtime", "Set Up")


def _weights(prefs) -> Item:
    choice = prefs.weights if prefs is not None else ""
    try:
        path = resolve_weights(choice or None, verify=False)
    except AniRenderError as exc:
        return Item(
            "Weights", False, str(exc).split(". ")[0], "preferences.addon_show", "Preferences"
        )
    return Item("Weights", True, path.stem if choice else f"shipped ({path.stem})")
