"""Panels, menus, lists and the modal job loop, driven without a window.

Headless Blender has no UI layout and no window events, so these tests hand the draw
functions a recording layout that checks every property path, operator id and operator
property against Blender's own RNA (a typo there only shows as a red field in the UI),
and drive ``ModalJobOperator``'s invoke/modal with timer and Esc events over the real
scene, ``SceneGuard`` and ``Job``.
"""

import types

import pytest

# ------------------------------------------------------------------- recording layout


def _rna_has(data, name: str) -> bool:
    if name.startswith('["') and name.endswith('"]'):  # a custom (ID) property
        return name[2:-2] in data.keys()
    return name in data.bl_rna.properties


class OperatorProps:
    """What ``layout.operator`` returns: setting an unknown property fails the test."""

    def __init__(self, idname: str, rna):
        object.__setattr__(self, "_idname", idname)
        object.__setattr__(self, "_rna", rna)

    def __setattr__(self, name, value):
        assert name in self._rna.properties, f"{self._idname} has no property {name!r}"


class Layout:
    """A stand-in for ``bpy.types.UILayout`` that records and checks what is drawn."""

    def __init__(self, log: list):
        self.log = log
        self.enabled = self.active = self.alert = True
        self.use_property_split = self.use_property_decorate = False

    def _child(self, *args, **kwargs):
        return Layout(self.log)

    row = column = box = split = column_flow = grid_flow = _child

    def separator(self, **kwargs):
        pass

    def label(self, text="", **kwargs):
        self.log.append(("label", text))

    def prop(self, data, name, **kwargs):
        assert _rna_has(data, name), f"{data!r} has no property {name!r}"
        self.log.append(("prop", name))

    def prop_search(self, data, name, search_data, search_name, **kwargs):
        assert _rna_has(data, name), f"{data!r} has no property {name!r}"
        assert _rna_has(search_data, search_name), f"{search_data!r} has no {search_name!r}"
        self.log.append(("prop", name))

    def template_ID(self, data, name, **kwargs):
        assert _rna_has(data, name), f"{data!r} has no property {name!r}"
        self.log.append(("prop", name))

    def template_list(self, list_type, list_id, data, name, active_data, active_name, **kw):
        import bpy

        assert hasattr(bpy.types, list_type), f"UI list {list_type} is not registered"
        assert _rna_has(data, name) and _rna_has(active_data, active_name)
        self.log.append(("list", list_type))

    def _operator_rna(self, idname: str):
        import bpy

        module, name = idname.split(".")
        op = getattr(getattr(bpy.ops, module), name)
        try:
            return op.get_rna_type()
        except KeyError:
            raise AssertionError(f"operator {idname} is not registered") from None

    def operator(self, idname, **kwargs):
        rna = self._operator_rna(idname)
        self.log.append(("operator", idname))
        return OperatorProps(idname, rna)

    def operator_menu_enum(self, idname, prop, **kwargs):
        assert prop in self._operator_rna(idname).properties, f"{idname} has no {prop!r}"
        self.log.append(("operator", idname))


def _draw(draw, context, *args) -> list:
    log: list = []
    fake_self = types.SimpleNamespace(layout=Layout(log), bl_idname="")
    draw(fake_self, context, *args)
    return log


def _draw_item(ui_list, context, item) -> list:
    log: list = []
    ui_list.draw_item(None, context, Layout(log), None, item, 0, None, "")
    return log


def _panels():
    import bpy

    from anirender.registration import CLASSES as classes

    return [c for c in classes if issubclass(c, bpy.types.Panel)]


def _draw_every_panel(context) -> dict:
    drawn = {}
    for panel in _panels():
        if hasattr(panel, "poll") and not panel.poll(context):
            continue
        drawn[panel.bl_idname] = _draw(panel.draw, context)
    return drawn


def _select(obj):
    import bpy

    for other in bpy.context.view_layer.objects:
        other.select_set(False)
    obj.select_set(True)
    bpy.context.view_layer.objects.active = obj


# --------------------------------------------------------------------------- the tests


def test_panels_draw_in_an_empty_scene(addon):
    import bpy

    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    drawn = _draw_every_panel(bpy.context)
    assert ("label", "Select a character (armature or meshes)") in drawn["ANIRENDER_PT_main"]
    assert ("label", "Select a character") in drawn["ANIRENDER_PT_character_sheet"]
    assert "ANIRENDER_PT_pose" not in drawn  # polls for a character
    assert ("operator", "anirender.render_udp_passes") in drawn["ANIRENDER_PT_passes"]


def test_panels_lists_and_menus_draw_for_a_rigged_character(addon, toy_character, tmp_path):
    import bpy
    import numpy as np
    from PIL import Image

    from anirender.addon.pose import sliders as morphs
    from anirender.panels import menus

    _select(toy_character)
    drawn = _draw_every_panel(bpy.context)
    assert ("operator", "anirender.pose_setup") in drawn["ANIRENDER_PT_pose"]  # not rigged yet
    labels = [e[1] for e in drawn["ANIRENDER_PT_passes"] if e[0] == "label"]
    assert any(text.startswith("Canonical: ") for text in labels)

    assert bpy.ops.anirender.pose_setup() == {"FINISHED"}
    cut_out = np.zeros((64, 64, 4), np.uint8)
    cut_out[16:48, 20:44] = (200, 120, 90, 255)  # a figure on a transparent background
    Image.fromarray(cut_out).save(tmp_path / "front.png")
    files = [{"name": "front.png"}]
    assert bpy.ops.anirender.sheet_add_files(directory=str(tmp_path), files=files) == {"FINISHED"}
    image = bpy.data.images.load(str(tmp_path / "front.png"))
    assert bpy.ops.anirender.sheet_add_image(image=image.name) == {"FINISHED"}
    drawn = _draw_every_panel(bpy.context)
    sliders = [e[1] for e in drawn["ANIRENDER_PT_pose"] if e[0] == "prop"]
    assert [morphs.prop_path(n) for n in morphs.POSE_NAMES] == [s for s in sliders if "[" in s]
    assert ("list", "ANIRENDER_UL_morph_bindings") in drawn["ANIRENDER_PT_pose_bindings"]
    assert ("list", "ANIRENDER_UL_sheet") in drawn["ANIRENDER_PT_character_sheet"]

    owner = toy_character
    settings = owner.anirender.morphs
    assert len(settings.bindings) > 0
    for item in settings.bindings:
        log = _draw_item(bpy.types.ANIRENDER_UL_morph_bindings, bpy.context, item)
        assert [e[1] for e in log if e[0] == "prop"][:2] == ["target", "object"]
    for item in owner.anirender.sheet:
        log = _draw_item(bpy.types.ANIRENDER_UL_sheet, bpy.context, item)
        assert log and log[0][0] == "label" and "front" in log[0][1]

    for _menu, draw in menus._ENTRIES:
        assert _draw(draw, bpy.context), f"{draw.__module__} drew nothing"


# ---------------------------------------------------------------------- the modal loop


class _WindowManager:
    def __init__(self):
        self.progress = []
        self.timers = 0

    def progress_begin(self, low, high):
        self.progress.append(("begin", high))

    def progress_update(self, value):
        self.progress.append(("update", value))

    def progress_end(self):
        self.progress.append(("end",))

    def event_timer_add(self, step, window=None):
        self.timers += 1
        return object()

    def event_timer_remove(self, timer):
        self.timers -= 1

    def modal_handler_add(self, op):
        pass


class _Workspace:
    def __init__(self):
        self.status = []

    def status_text_set(self, text):
        self.status.append(text)


def _window_context():
    """The real context's scene and objects, with a stand-in window, manager and workspace."""
    import bpy

    real = bpy.context
    return types.SimpleNamespace(
        scene=real.scene,
        view_layer=real.view_layer,
        active_object=real.active_object,
        selected_objects=list(real.selected_objects),
        window=object(),
        window_manager=_WindowManager(),
        workspace=_Workspace(),
    )


def _probe_operator(steps):
    """A ModalJobOperator whose job runs ``steps(scene)`` and records its reports."""
    from anirender.addon.core.jobs import Job, ModalJobOperator

    class Probe(ModalJobOperator):
        def __init__(self):
            self.reports = []

        def report(self, kinds, message):
            self.reports.append((set(kinds), message))

        def make_job(self, context, guard):
            return Job("Probe", lambda job: steps(context.scene), total=3)

    return Probe()


def _event(kind, value="PRESS"):
    return types.SimpleNamespace(type=kind, value=value)


def _three_steps(scene):
    for frame in (11, 12, 13):
        scene.frame_set(frame)
        scene.render.resolution_x = 100 + frame
        yield f"frame {frame}"


def test_modal_job_runs_on_timer_events_and_restores_the_scene(addon):
    from anirender.addon.core.guard import scene_snapshot

    context = _window_context()
    before = scene_snapshot(context)
    op = _probe_operator(_three_steps)
    assert op.invoke(context, None) == {"RUNNING_MODAL"}
    assert op.modal(context, _event("MOUSEMOVE")) == {"PASS_THROUGH"}
    results = [op.modal(context, _event("TIMER", "NOTHING")) for _ in range(5)]
    assert results[-1] == {"FINISHED"} and op._job.done == 3
    assert scene_snapshot(context) == before  # the guard put frame and settings back
    wm = context.window_manager
    assert wm.progress[0] == ("begin", 3) and wm.progress[-1] == ("end",) and wm.timers == 0
    assert context.workspace.status[-1] is None  # status bar cleared


def test_esc_cancels_the_job_and_restores_the_scene(addon):
    from anirender.addon.core.guard import scene_snapshot

    context = _window_context()
    before = scene_snapshot(context)
    closed = []

    def steps(scene):
        try:
            yield from _three_steps(scene)
        finally:
            closed.append(True)

    op = _probe_operator(steps)
    op.invoke(context, None)
    op._job.step()  # one frame done
    assert context.scene.frame_current == 11
    assert op.modal(context, _event("ESC")) == {"CANCELLED"}
    assert closed == [True]
    assert scene_snapshot(context) == before
    assert op.reports[-1][1] == "Probe: cancelled after 1 of 3"
    assert context.window_manager.timers == 0


def test_an_artist_error_mid_job_is_reported_and_the_scene_restored(addon):
    from anirender.addon.core.guard import scene_snapshot
    from anirender.errors import AniRenderError

    context = _window_context()
    before = scene_snapshot(context)

    def steps(scene):
        scene.frame_set(40)
        yield "first"
        raise AniRenderError("The shader service stopped answering; start it again.")

    op = _probe_operator(steps)
    op.invoke(context, None)
    assert op.modal(context, _event("TIMER", "NOTHING")) == {"CANCELLED"}
    assert op.reports[-1] == ({"ERROR"}, "The shader service stopped answering; start it again.")
    assert scene_snapshot(context) == before


def test_an_error_before_the_job_starts_changes_nothing(addon):
    from anirender.addon.core.guard import scene_snapshot
    from anirender.addon.core.jobs import ModalJobOperator
    from anirender.errors import AniRenderError

    class Refuses(ModalJobOperator):
        reports: list = []

        def report(self, kinds, message):
            self.reports.append(message)

        def make_job(self, context, guard):
            context.scene.frame_set(77)
            raise AniRenderError("Nothing to render.")

    context = _window_context()
    before = scene_snapshot(context)
    op = Refuses()
    assert op.invoke(context, None) == {"CANCELLED"}
    assert op.reports == ["Nothing to render."]
    assert scene_snapshot(context) == before
    assert context.window_manager.timers == 0


@pytest.mark.parametrize("kind", ["MOUSEMOVE", "LEFTMOUSE"])
def test_other_events_pass_through_while_running(addon, kind):
    op = _probe_operator(_three_steps)
    context = _window_context()
    op.invoke(context, None)
    assert op.modal(context, _event(kind)) == {"PASS_THROUGH"}
    assert op._job.done == 0
    op.modal(context, _event("ESC"))
