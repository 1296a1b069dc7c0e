"""Blender-side logic: bpy + numpy, no UI, no torch."""
