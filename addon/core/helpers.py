"""The add-on's own collection for helper objects an artist never edits by hand.

Helpers (the empty the head sliders rotate, for one) must stay evaluated, since a
constraint or driver reads them, so they are not disabled; the collection is hidden in
each view layer instead (the eye in the outliner) and cannot be selected in the viewport.
"""

from __future__ import annotations

import bpy

COLLECTION = "AniRender Helpers"


def helpers_collection(scene):
    """The scene's hidden, unselectable helpers collection (made on first use)."""
    collection = bpy.data.collections.get(COLLECTION)
    if collection is None or collection.library is not None:
        collection = bpy.data.collections.new(COLLECTION)
        collection.hide_select = True
    if collection.name not in scene.collection.children:
        scene.collection.children.link(collection)
    for view_layer in scene.view_layers:
        layer = view_layer.layer_collection.children.get(collection.name)
        if layer is not None:
            layer.hide_viewport = True
    return collection


def move_to_helpers(obj, scene) -> None:
    """Link ``obj`` into the helpers collection only."""
    collection = helpers_collection(scene)
    for other in list(obj.users_collection):
        if other != collection:
            other.objects.unlink(obj)
    if obj.name not in collection.objects:
        collection.objects.link(obj)
