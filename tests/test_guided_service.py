"""The service's one shading road: a sheet uploaded with its views' UDPs is painted by the
guided shader (the shipped weights), one without by CoNR as before (a version 1 client);
every answer names the shader. Real HTTP on 127.0.0.1."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from service_support import SIZE, sheet_images, udp_frames

from anirender.service import protocol


@pytest.fixture
def http(shader_service):
    headers = {"Content-Type": protocol.NPZ_TYPE}
    with httpx.Client(base_url=shader_service.url + "/v1", timeout=300, headers=headers) as client:
        yield client


def guided_sheet(views: int = 2, size: int = SIZE):
    """Sheet images with UDPs of the same discs ``udp_frames`` draws."""
    images = sheet_images(views, size)
    udps = udp_frames(views, size, seed=5)
    images[..., 3] = np.where(udps[..., 3] > 0, 255, 0)
    images[..., :3] = (udps[..., :3] * 255).astype(np.uint8)
    return images, udps


def test_sheet_with_udps_is_shaded_by_the_guided_shader(http):
    from anirender.models.guided import load_guided

    images, udps = guided_sheet()
    answer = http.post("/sheets", content=protocol.pack(images=images, udps=udps))
    assert answer.status_code == 200, answer.text
    sheet = answer.json()
    assert sheet["shader"] == "guided" and sheet["views"] == 2
    assert http.get(f"/sheets/{sheet['sheet_id']}").json()["shader"] == "guided"
    assert http.get("/health").json()["protocol"] == protocol.VERSION == 2

    udp = udp_frames(3)
    shaded = http.post(f"/sheets/{sheet['sheet_id']}/shade", content=protocol.pack(udp=udp))
    assert shaded.status_code == 200, shaded.text
    assert shaded.headers[protocol.SHADER] == "guided"
    rgba = protocol.unpack(shaded.content, ("rgba",), 1 << 28)["rgba"]
    model = load_guided()
    expected = model.render(model.encode_sheet(images, udps), udp)
    np.testing.assert_allclose(rgba, expected, atol=2e-3)

    job = http.post(
        f"/jobs?sheet_id={sheet['sheet_id']}",
        content=protocol.pack(udp=udp, frames=np.arange(3, dtype=np.int64)),
    )
    assert job.status_code == 200 and job.json()["shader"] == "guided"


def test_sheet_without_udps_keeps_conr_and_its_id(http):
    images = sheet_images()
    answer = http.post("/sheets", content=protocol.pack(images=images))
    assert answer.status_code == 200, answer.text
    assert answer.json()["shader"] == "conr"
    assert answer.json()["sheet_id"] == protocol.sheet_id(images)
    shaded = http.post(
        f"/sheets/{answer.json()['sheet_id']}/shade", content=protocol.pack(udp=udp_frames(1))
    )
    assert shaded.status_code == 200 and shaded.headers[protocol.SHADER] == "conr"


@pytest.mark.parametrize(
    "case, message",
    [
        ("one view", "one view shows only one side"),
        ("sizes differ", "frame each view and its UDP together"),
        ("empty udp", "has no character pixel"),
        ("count differs", "one UDP per view"),
    ],
)
def test_bad_guided_sheets_get_a_clear_400(http, case, message):
    images, udps = guided_sheet(views=2)
    if case == "one view":
        images, udps = images[:1], udps[:1]
    elif case == "sizes differ":
        udps = np.ascontiguousarray(udps[:, ::2, ::2])
    elif case == "empty udp":
        udps[1] = 0.0
    else:
        udps = udps[:1]
    answer = http.post("/sheets", content=protocol.pack(images=images, udps=udps))
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]
    cached = [s["sheet_id"] for s in http.get("/info").json()["sheets"]]
    assert protocol.sheet_id(images, udps) not in cached


class _Directory:
    """The upload directory's contract (``create_app``'s ``shared``) in one process, as
    the Ray actor keeps it for the replicas (see tests/test_ray_serve.py)."""

    def __init__(self):
        self.uploads = {}

    async def publish(self, kind, key, payload):
        known = (kind, key) in self.uploads
        self.uploads[kind, key] = payload
        return known

    async def fetch(self, kind, key):
        return self.uploads.get((kind, key))

    async def forget(self, kind, key):
        return self.uploads.pop((kind, key), None) is not None


def test_a_copy_that_never_saw_a_guided_sheet_shades_it_guided(tiny_conr_weights):
    from fastapi.testclient import TestClient

    from anirender.models.conr.model import CoNR
    from anirender.models.guided import load_guided
    from anirender.service.app import create_app
    from anirender.service.portraits import PortraitLibrary
    from anirender.service.queue import ShadingQueue
    from anirender.service.sheet_shaders import SheetShaders

    guided = load_guided()
    conr = CoNR.from_safetensors(tiny_conr_weights)
    directory = _Directory()
    queues = [ShadingQueue(SheetShaders(conr, guided)).start() for _ in range(2)]
    apps = [
        TestClient(
            create_app(q, portraits=PortraitLibrary(device="cpu"), shared=directory),
            headers={"Content-Type": protocol.NPZ_TYPE},
        )
        for q in queues
    ]
    try:
        images, udps = guided_sheet()
        answer = apps[0].post("/v1/sheets", content=protocol.pack(images=images, udps=udps))
        assert answer.status_code == 200, answer.text
        sheet_id = answer.json()["sheet_id"]
        assert apps[1].get(f"/v1/sheets/{sheet_id}").json()["shader"] == "guided"
        udp = udp_frames(2)
        shaded = apps[1].post(f"/v1/sheets/{sheet_id}/shade", content=protocol.pack(udp=udp))
        assert shaded.headers[protocol.SHADER] == "guided"
        rgba = protocol.unpack(shaded.content, ("rgba",), 1 << 28)["rgba"]
        expected = guided.render(guided.encode_sheet(images, udps), udp)
        np.testing.assert_allclose(rgba, expected, atol=2e-3)
    finally:
        for q in queues:
            q.stop()
