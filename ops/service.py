"""Reach the shader service: test the connection, start or stop the local service."""

from __future__ import annotations

import bpy

from ..addon import client
from ..addon.jobs import Job, ModalJobOperator
from ..addon.prefs import preferences


class ANIRENDER_OT_test_connection(ModalJobOperator, bpy.types.Operator):
    """Connect to the neural shader as set in the preferences (starting the local service if that is the choice) and report what it runs"""

    bl_idname = "anirender.test_connection"
    bl_label = "Test Connection"
    bl_options = {"REGISTER"}

    def make_job(self, context, guard):
        settings = client.settings_from(preferences(context))

        def steps(job):
            def done(info):
                job.summary = client.status["text"]

            job.submit(client.test_connection, settings, then=done)
            yield "connecting"

        return Job("Test Connection", steps, total=1)


class ANIRENDER_OT_start_local_service(ModalJobOperator, bpy.types.Operator):
    """Start the local neural shader service with the Python interpreter from the preferences"""

    bl_idname = "anirender.start_local_service"
    bl_label = "Start Local Service"
    bl_options = {"REGISTER"}

    def make_job(self, context, guard):
        settings = client.settings_from(preferences(context))
        settings["mode"] = "LOCAL"

        def steps(job):
            def done(info):
                service = client.local_service(**settings)
                job.summary = f"Local service on port {service.bound_port}: {client.status['text']}"

            job.submit(client.test_connection, settings, then=done)
            yield "starting the local service"

        return Job("Start Local Service", steps, total=1)


class ANIRENDER_OT_stop_local_service(bpy.types.Operator):
    """Stop the local neural shader service started by this Blender"""

    bl_idname = "anirender.stop_local_service"
    bl_label = "Stop Local Service"
    bl_options = {"REGISTER"}

    def execute(self, context):
        stopped = client.stop_local_service()
        client.status.update(text="local service stopped" if stopped else "not tested", ok=None)
        self.report(
            {"INFO"}, "Local service stopped" if stopped else "No local service was running"
        )
        return {"FINISHED"}
