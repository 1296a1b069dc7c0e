"""AniRender: anime-style neural rendering for Blender.

This file is both the Blender extension entry point and the root of the Python package
``anirender``. It holds only ``register()`` / ``unregister()``; ``bpy`` (through
``registration``) is imported inside them so that ``import anirender.models`` works
where Blender is absent.
"""


def register():
    # bpy: `import anirender` must work without Blender
    from . import registration

    registration.register()


def unregister():
    # bpy: `import anirender` must work without Blender
    from . import registration

    registration.unregister()
