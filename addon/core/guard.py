"""Find the character and camera in a scene, and guard the scene's state.

``SceneGuard`` is the house rule in code: an operator leaves the user's scene as it found
it, apart from what it was asked to add. It snapshots render settings, view layers,
camera, frame, selection, mode and visibility, restores them on exit (also on error and
cancel), and removes data-blocks created inside it unless they were declared with
``keep``.
"""

from __future__ import annotations

import bpy

# Settings structs reached from the scene whose plain properties are snapshotted.
_SCENE_STRUCTS = (
    "",  # the scene itself: frame range, fps, ...
    "render",
    "render.image_settings",
    "render.image_settings.view_settings",
    "render.image_settings.display_settings",
    "cycles",
    "view_settings",
    "display_settings",
    "display.shading",
)
# ID pointers an operator may swap, restored by identity.
_SCENE_POINTERS = ("camera", "world", "compositing_node_group")
_VIEW_LAYER_STRUCTS = ("", "cycles")
# bpy.data collections whose new members are removed when a guard exits.
_DATA_COLLECTIONS = (
    "objects",
    "meshes",
    "materials",
    "images",
    "node_groups",
    "textures",
    "cameras",
    "lights",
    "worlds",
    "actions",
    "collections",
)
_SKIP_PROPS = {
    "rna_type",
    "name",
    "frame_current",
    "frame_current_final",
    "frame_float",
    "use_nodes",  # deprecated in 5.0; reading it warns
    # holds 0, which matches none of its items in Blender 5.0: every read prints a warning
    "wireframe_color_type",
}


# --- state snapshot -------------------------------------------------------------------


def _resolve(root, path: str):
    obj = root
    for part in filter(None, path.split(".")):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _plain_values(struct) -> dict:
    values = {}
    for prop in struct.bl_rna.properties:
        ident = prop.identifier
        if ident in _SKIP_PROPS or prop.is_readonly or prop.type in {"POINTER", "COLLECTION"}:
            continue
        try:
            value = getattr(struct, ident)
        except AttributeError:
            continue
        if getattr(prop, "is_array", False) or prop.type == "ENUM" and prop.is_enum_flag:
            value = tuple(value) if not isinstance(value, set) else frozenset(value)
        values[ident] = value
    return values


def _restore_values(struct, values: dict) -> None:
    # Some settings only accept a value once another is set (colour depth after file
    # format), so retry the failures once.
    pending = dict(values)
    for _ in range(2):
        failed = {}
        for ident, value in pending.items():
            try:
                current = getattr(struct, ident)
                if isinstance(value, tuple):
                    current = tuple(current)
                elif isinstance(value, frozenset):
                    current = frozenset(current)
                    value = set(value)
                if current != value:
                    setattr(struct, ident, value)
            except (AttributeError, TypeError, ValueError):
                failed[ident] = value
        if not failed:
            return
        pending = failed


def _id_key(idb) -> int | None:
    return idb.as_pointer() if idb is not None else None


class SceneGuard:
    """Snapshot a scene's state on enter; restore it and drop new data-blocks on exit."""

    def __init__(self, context, remove_new_data: bool = True):
        self.context = context
        self.scene = context.scene
        self.remove_new_data = remove_new_data
        self._kept: set[int] = set()

    # public API -----------------------------------------------------------------------
    def keep(self, id_block):
        """Declare a data-block created inside the guard as a result to keep."""
        self._kept.add(id_block.as_pointer())
        return id_block

    def __enter__(self):
        scene = self.scene
        self._structs = {}
        for path in _SCENE_STRUCTS:
            struct = _resolve(scene, path)
            if struct is not None:
                self._structs[path] = (struct, _plain_values(struct))
        self._pointers = {p: getattr(scene, p, None) for p in _SCENE_POINTERS if hasattr(scene, p)}
        self._frame = (scene.frame_current, scene.frame_subframe)
        self._layers = []
        for layer in scene.view_layers:
            structs = []
            for path in _VIEW_LAYER_STRUCTS:
                struct = _resolve(layer, path)
                if struct is not None:
                    structs.append((struct, _plain_values(struct)))
            aovs = {a.name for a in layer.aovs} if hasattr(layer, "aovs") else set()
            self._layers.append((layer, structs, layer.material_override, aovs))
        view_layer = self.context.view_layer
        self._active = view_layer.objects.active
        self._mode = self._active.mode if self._active is not None else "OBJECT"
        self._objects = {}
        for obj in scene.objects:
            self._objects[obj.as_pointer()] = (
                obj,
                obj.select_get(view_layer=view_layer),
                obj.hide_render,
                obj.hide_viewport,
                obj.hide_get(view_layer=view_layer),
            )
        self._data = {
            name: {idb.as_pointer() for idb in getattr(bpy.data, name)}
            for name in _DATA_COLLECTIONS
        }
        return self

    def __exit__(self, exc_type, exc, tb):
        self.restore()
        return False

    # restore --------------------------------------------------------------------------
    def restore(self):
        scene = self.scene
        view_layer = self.context.view_layer
        for struct, values in self._structs.values():
            _restore_values(struct, values)
        for name, value in self._pointers.items():
            if getattr(scene, name, None) != value:
                try:
                    setattr(scene, name, value)
                except (AttributeError, TypeError, ReferenceError):
                    pass
        for layer, structs, override, aovs in self._layers:
            for struct, values in structs:
                _restore_values(struct, values)
            if layer.material_override != override:
                layer.material_override = override
            if hasattr(layer, "aovs"):
                for aov in [a for a in layer.aovs if a.name not in aovs]:
                    layer.aovs.remove(aov)
        if self.remove_new_data:
            self._remove_new_data()
        for obj, selected, hide_render, hide_viewport, hidden in self._objects.values():
            try:
                if obj.hide_render != hide_render:
                    obj.hide_render = hide_render
                if obj.hide_viewport != hide_viewport:
                    obj.hide_viewport = hide_viewport
                if obj.hide_get(view_layer=view_layer) != hidden:
                    obj.hide_set(hidden, view_layer=view_layer)
                if obj.select_get(view_layer=view_layer) != selected:
                    obj.select_set(selected, view_layer=view_layer)
            except (ReferenceError, RuntimeError):
                continue
        if view_layer.objects.active != self._active:
            view_layer.objects.active = self._active
        if self._active is not None and self._active.mode != self._mode:
            try:
                with self.context.temp_override(active_object=self._active):
                    bpy.ops.object.mode_set(mode=self._mode)
            except RuntimeError:
                pass
        frame, subframe = self._frame
        if (scene.frame_current, scene.frame_subframe) != (frame, subframe):
            scene.frame_set(frame, subframe=subframe)

    def _remove_new_data(self):
        # objects first so meshes/materials they use become free to remove
        for name in _DATA_COLLECTIONS:
            collection = getattr(bpy.data, name)
            before = self._data[name]
            for idb in list(collection):
                key = idb.as_pointer()
                if key in before or key in self._kept or self._is_kept_dependency(idb):
                    continue
                collection.remove(idb)

    def _is_kept_dependency(self, idb) -> bool:
        # A mesh used by a kept object, or a material used by that mesh, is part of the
        # result: walk up the users until a kept block is found.
        if not self._kept:
            return False
        seen = {idb.as_pointer()}
        frontier = [idb]
        while frontier:
            users = bpy.data.user_map(subset=frontier)
            frontier = []
            for user_set in users.values():
                for user in user_set:
                    key = user.as_pointer()
                    if key in self._kept:
                        return True
                    if key not in seen:
                        seen.add(key)
                        frontier.append(user)
        return False


def scene_snapshot(context) -> dict:
    """A comparable dump of everything ``SceneGuard`` promises to restore."""
    scene = context.scene
    view_layer = context.view_layer

    def plain(values):
        return {k: (v.name if isinstance(v, bpy.types.ID) else v) for k, v in values.items()}

    snap = {"frame": (scene.frame_current, scene.frame_subframe)}
    for path in _SCENE_STRUCTS:
        struct = _resolve(scene, path)
        if struct is not None:
            snap["scene." + path] = plain(_plain_values(struct))
    for name in _SCENE_POINTERS:
        if hasattr(scene, name):
            value = getattr(scene, name)
            snap["pointer." + name] = value.name if value is not None else None
    for layer in scene.view_layers:
        for path in _VIEW_LAYER_STRUCTS:
            struct = _resolve(layer, path)
            if struct is not None:
                snap[f"layer.{layer.name}.{path}"] = plain(_plain_values(struct))
        override = layer.material_override
        snap[f"layer.{layer.name}.override"] = override.name if override else None
        if hasattr(layer, "aovs"):
            snap[f"layer.{layer.name}.aovs"] = sorted(a.name for a in layer.aovs)
    active = view_layer.objects.active
    snap["active"] = active.name if active else None
    snap["mode"] = active.mode if active else "OBJECT"
    snap["objects"] = {
        o.name: (
            o.select_get(view_layer=view_layer),
            o.hide_render,
            o.hide_viewport,
            o.hide_get(view_layer=view_layer),
            tuple(round(x, 6) for x in o.matrix_world.col[3]),
        )
        for o in scene.objects
    }
    snap["data"] = {
        name: sorted(i.name for i in getattr(bpy.data, name)) for name in _DATA_COLLECTIONS
    }
    return snap
