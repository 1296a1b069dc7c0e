"""Add-on preferences: how Blender reaches the neural shader service."""

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

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
        description="Optional: a Python with anirender and torch of your own; empty uses the "
        "shader runtime (Set Up Shader Runtime)",
    )
    torch_build: EnumProperty(
        name="Torch Build",
        items=(
            ("AUTO", "Automatic", "CUDA when an NVIDIA GPU is found, else CPU"),
            ("CPU", "CPU", "Runs everywhere; about 1 GB"),
            ("CUDA", "CUDA (NVIDIA)", "For NVIDIA GPUs; several GB"),
        ),
        default="AUTO",
    )
    use_pytorch_index: BoolProperty(
        name="Use PyTorch's Index",
        default=True,
        description="Also look for torch on download.pytorch.org (the build chosen above); off: "
        "only the package index pip is configured with on this machine",
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
        if self.service_mode in {"LOCAL", "IN_PROCESS"}:
            self._draw_runtime(layout.box())
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

    def _draw_runtime(self, box):
        # imported here: the runtime module reads Blender's user folders, needed only to draw
        from ..runtime.location import runtime_dir, runtime_info

        info = runtime_info()
        if info is None:
            box.label(text="Shader runtime: not set up (the shader needs torch)", icon="ERROR")
        else:
            build = info.get("build", "").upper()
            box.label(
                text=f"Shader runtime: ready, torch {build} ({runtime_dir()})", icon="CHECKMARK"
            )
        row = box.row()
        row.prop(self, "torch_build")
        row.prop(self, "use_pytorch_index")
        row = box.row()
        row.operator("anirender.setup_runtime", icon="IMPORT")
        row.operator("anirender.remove_runtime", icon="TRASH")


def preferences(context=None):
    """The add-on's preferences, or None when it runs unregistered (scripts, tests)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None else None
