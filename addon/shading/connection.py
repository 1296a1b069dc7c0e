"""What the add-on last learned about its shader: shown in the preferences, written by
the local-service launcher and by Test Connection (no bpy; any thread)."""

#: last outcome of "Test Connection" or of starting the local service
status = {"text": "not tested", "ok": None}
