"""Add-on preferences: how Blender reaches the neural shader service."""

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from ..shading import connection

# "anirender" from source, "bl_ext.<repo>.anirender" when installed as an extension
ADDON_ID = __package__.rsplit(".", 2)[0]


class AniRenderPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    service_mode: EnumProperty(
        name="Neural Shader",
        items=(
            ("LOCAL", "Local Service", "Start the service with the Python interpreter below"),
            ("REMOTE", "Remote Service", "Connect to a running service by URL"),
            ("IN_PROCESS", "In Blender", "Run the networks inside Blender (needs torch here)"),
        ),
        default="LOCAL",
    )
    python_path: StringProperty(
        name="Python Interpreter",
        subtype="FILE_PATH",
        description="A Python with anirender and torch installed, used to start the service",
    )
    local_port: IntProperty(
        name="Port", default=0, min=0, max=65535, description="0 picks a free port"
    )
    remote_url: StringProperty(name="URL", default="http://127.0.0.1:8765")
    token: StringProperty(name="Token", subtype="PASSWORD")
    weights: StringProperty(
        name="Weights", default="", description="Weights name or path; empty uses the shipped model"
    )

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "service_mode")
        if self.service_mode == "LOCAL":
            layout.prop(self, "python_path")
            layout.prop(self, "local_port")
        elif self.service_mode == "REMOTE":
            layout.prop(self, "remote_url")
            layout.prop(self, "token")
        layout.prop(self, "weights")
        row = layout.row()
        row.operator("anirender.test_connection", icon="LINKED")
        if self.service_mode == "LOCAL":
            row.operator("anirender.start_local_service", icon="PLAY")
            row.operator("anirender.stop_local_service", icon="PAUSE")
        ok = connection.status["ok"]
        icon = "CHECKMARK" if ok else ("ERROR" if ok is False else "QUESTION")
        layout.label(text=connection.status["text"][:200], icon=icon)


def preferences(context=None):
    """The add-on's preferences, or None when it runs unregistered (scripts, tests)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None else None
