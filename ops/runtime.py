"""Set Up / Remove Shader Runtime: torch for the shader without a terminal (preferences)."""

from __future__ import annotations

import shutil

import bpy

from ..addon.core.jobs import ModalJobOperator
from ..addon.core.prefs import preferences
from ..addon.runtime.builder import plan_runtime, runtime_job
from ..addon.runtime.location import runtime_dir, runtime_info
from ..addon.shading.local_service import stop_local_service
from ..errors import AniRenderError


class ANIRENDER_OT_setup_runtime(ModalJobOperator, bpy.types.Operator):
    """Make a Python environment with torch and AniRender for the neural shader (downloads about 1 GB, more for CUDA)"""

    bl_idname = "anirender.setup_runtime"
    bl_label = "Set Up Shader Runtime"

    def make_job(self, context, guard):
        prefs = preferences(context)
        build = prefs.torch_build if prefs is not None else "AUTO"
        use_index = prefs.use_pytorch_index if prefs is not None else True
        return runtime_job(plan_runtime(build, use_index))

    def invoke(self, context, event):
        if bpy.app.background:  # scripts and farms: synchronous, as execute
            return self.execute(context)
        return ModalJobOperator.invoke(self, context, event)


class ANIRENDER_OT_remove_runtime(bpy.types.Operator):
    """Delete the shader runtime this add-on set up (an interpreter chosen by hand stays)"""

    bl_idname = "anirender.remove_runtime"
    bl_label = "Remove Shader Runtime"

    def execute(self, context):
        folder = runtime_dir()
        if runtime_info() is None and not folder.exists():
            self.report({"INFO"}, "There is no shader runtime to remove.")
            return {"CANCELLED"}
        stop_local_service()  # it may be running from the runtime
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            self.report({"ERROR"}, str(AniRenderError(f"Could not remove {folder}: {exc}")))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Shader runtime removed from {folder}")
        return {"FINISHED"}
