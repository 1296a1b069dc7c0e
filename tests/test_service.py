"""The shader service over real HTTP: shading, errors, limits, token, jobs, batching."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from service_support import (
    SIZE,
    reference_frames,
    running_service,
    sheet_images,
    start_service,
    udp_frames,
)

from anirender.service import protocol


@pytest.fixture(scope="module")
def tiny_model(tiny_conr_weights):
    from anirender.models.conr.model import CoNR

    return CoNR.from_safetensors(tiny_conr_weights)


@pytest.fixture
def http(shader_service):
    headers = {"Content-Type": protocol.NPZ_TYPE}
    with httpx.Client(base_url=shader_service.url + "/v1", timeout=120, headers=headers) as client:
        yield client


def upload(http, images) -> str:
    answer = http.post("/sheets", content=protocol.pack(images=images))
    assert answer.status_code == 200, answer.text
    return answer.json()["sheet_id"]


def shade(http, sheet_id, udp) -> np.ndarray:
    answer = http.post(f"/sheets/{sheet_id}/shade", content=protocol.pack(udp=udp))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == protocol.NPZ_TYPE
    assert float(answer.headers[protocol.SHADING_SECONDS]) > 0
    return protocol.unpack(answer.content, ("rgba",), 1 << 28)["rgba"]


def test_shaded_frames_are_the_model_output(http, tiny_model):
    images, udp = sheet_images(), udp_frames(3)
    sheet_id = upload(http, images)
    again = http.post("/sheets", content=protocol.pack(images=images)).json()
    assert again == {
        "sheet_id": sheet_id,
        "views": 2,
        "size": SIZE,
        "shader": "conr",
        "cached": True,
    }
    rgba = shade(http, sheet_id, udp)
    expected = reference_frames(tiny_model, images, udp)
    assert rgba.shape == (3, SIZE, SIZE, 4) and rgba.dtype == np.float32
    np.testing.assert_allclose(rgba, expected, atol=1e-3)
    # different poses give different frames (the answer is not a constant)
    assert np.abs(rgba[0] - rgba[1]).max() > 0.05

    info = http.get("/info").json()
    assert info["device"] == "cpu"
    assert info["models"]["conr"]["config"]["width"] == pytest.approx(1 / 16)
    assert {"torch", "numpy", "python"} <= set(info["versions"])
    assert sheet_id in [s["sheet_id"] for s in info["sheets"]]
    assert http.get(f"/sheets/{sheet_id}").json()["views"] == 2


def _npz_with_object_array() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, udp=np.array([{"not": "an array"}], dtype=object))
    return buffer.getvalue()


def _npz_announcing_a_huge_array() -> bytes:
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**5, 1000, 1000, 4)}
    )
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("udp.npy", header.getvalue() + b"0" * 64)
    return archive.getvalue()


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "needs an .npz body"),
        (b"not a zip", "not an .npz archive"),
        (protocol.pack(other=np.zeros(3)), "lacks udp"),
        (protocol.pack(udp=udp_frames(1).astype(np.float64)), "must be float32"),
        (protocol.pack(udp=udp_frames(1)[..., :3]), "(frames, H, W, 4)"),
        (protocol.pack(udp=np.zeros((1, 64, 64, 4), np.float32)), "multiple of 128"),
        (protocol.pack(udp=np.zeros((1, 256, 256, 4), np.float32)), "same working size"),
        (protocol.pack(udp=np.full((1, SIZE, SIZE, 4), np.nan, np.float32)), "NaN"),
        (protocol.pack(udp=udp_frames(1) * 3), "[0, 1]"),
        (_npz_with_object_array(), "Python objects"),
        (_npz_announcing_a_huge_array(), "announces more data than it holds"),
    ],
)
def test_bad_frames_get_a_clear_400(http, body, message):
    sheet_id = upload(http, sheet_images())
    answer = http.post(f"/sheets/{sheet_id}/shade", content=body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]
    assert http.get("/health").json()["status"] == "ok"


def test_bad_sheets_and_unknown_ids(http):
    opaque = np.full((1, SIZE, SIZE, 4), 255, np.uint8)
    answer = http.post("/sheets", content=protocol.pack(images=opaque))
    assert answer.status_code == 400 and "transparent" in answer.json()["error"]
    answer = http.post("/sheets", content=protocol.pack(images=sheet_images().astype(np.float32)))
    assert answer.status_code == 400 and "uint8" in answer.json()["error"]
    answer = http.post("/sheets/nope/shade", content=protocol.pack(udp=udp_frames(1)))
    assert answer.status_code == 404 and "Upload the sheet again" in answer.json()["error"]
    assert http.get("/jobs/nope").status_code == 404
    assert http.get("/health").json()["status"] == "ok"


def test_oversized_body_is_413(http):
    sheet_id = upload(http, sheet_images())
    big = udp_frames(18)  # 18 x 256 KiB: over the 4 MiB limit
    answer = http.post(f"/sheets/{sheet_id}/shade", content=protocol.pack(udp=big))
    assert answer.status_code == 413
    assert "larger than the service accepts (4 MiB)" in answer.json()["error"]

    def chunks():  # no Content-Length: the limit holds while streaming too
        body = protocol.pack(udp=big)
        for i in range(0, len(body), 1 << 20):
            yield body[i : i + 1 << 20]

    answer = http.post(f"/sheets/{sheet_id}/shade", content=chunks())
    assert answer.status_code == 413
    assert http.get("/health").json()["status"] == "ok"


def test_sequence_job_progress_results_cancel(http, tiny_model):
    images, udp = sheet_images(seed=5), udp_frames(5, seed=6)
    sheet_id = upload(http, images)
    frames = np.arange(10, 15)
    answer = http.post(
        "/jobs", params={"sheet_id": sheet_id}, content=protocol.pack(udp=udp, frames=frames)
    )
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["total"] == 5
    while job["state"] == "running":
        time.sleep(0.1)
        job = http.get(f"/jobs/{job['job_id']}").json()
    assert job["state"] == "done" and job["done"] == 5
    answer = http.get(f"/jobs/{job['job_id']}/results", params={"start": 1, "limit": 3})
    got = protocol.unpack(answer.content, ("index", "frames", "rgba"), 1 << 28)
    assert got["index"].tolist() == [1, 2, 3] and got["frames"].tolist() == [11, 12, 13]
    expected = reference_frames(tiny_model, images, udp)
    np.testing.assert_allclose(got["rgba"], expected[1:4], atol=1e-3)

    wrong = http.post(
        "/jobs", params={"sheet_id": sheet_id}, content=protocol.pack(udp=udp, frames=frames[:2])
    )
    assert wrong.status_code == 400 and "one per UDP frame" in wrong.json()["error"]

    long = http.post(
        "/jobs",
        params={"sheet_id": sheet_id},
        content=protocol.pack(udp=udp_frames(12), frames=np.arange(12)),
    ).json()
    cancelled = http.delete(f"/jobs/{long['job_id']}").json()
    assert cancelled["state"] == "cancelled"
    time.sleep(0.5)
    assert http.get(f"/jobs/{long['job_id']}").json()["done"] < 12


def test_token_is_required_on_every_request(tiny_conr_weights):
    with running_service(tiny_conr_weights, "--token", "s3cret") as service:
        with httpx.Client(base_url=service.url + "/v1", timeout=60) as http:
            for path in ("/health", "/info", "/sheets/x"):
                assert http.get(path).status_code == 401
                wrong = http.get(path, headers={"Authorization": "Bearer nope"})
                assert wrong.status_code == 401 and "token" in wrong.json()["error"]
            assert http.post("/sheets", content=b"x").status_code == 401
            assert httpx.get(service.url + "/openapi.json").status_code == 401
            good = {"Authorization": "Bearer s3cret"}
            assert http.get("/health", headers=good).json()["status"] == "ok"


def test_refuses_network_host_without_token():
    result = subprocess.run(
        [sys.executable, "-m", "anirender.cli", "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "without a token" in result.stderr


def test_frames_from_concurrent_requests_are_batched(tiny_conr_weights, tiny_model):
    """Frames queued while the worker is busy go through the model together."""
    from anirender.service.queue import ShadingQueue

    class HeldModel:
        """The model, with sheet encoding held until ``go`` is set (a busy worker)."""

        def __init__(self):
            self.go = threading.Event()
            self.go.set()

        def __getattr__(self, name):
            return getattr(tiny_model, name)

        def encode_sheet(self, images):
            assert self.go.wait(120)
            return tiny_model.encode_sheet(images)

    held = HeldModel()
    queue = ShadingQueue(held, max_batch=8).start()
    try:
        a, b = sheet_images(seed=11), sheet_images(seed=12)
        queue.add_sheet("a", a).result()
        held.go.clear()
        busy = queue.add_sheet("b", b)  # the worker is held encoding b while frames arrive
        udp = udp_frames(8, seed=13)
        futures = [queue.shade("a", udp[i : i + 2]) for i in range(0, 8, 2)]
        held.go.set()
        busy.result()
        mixed = [queue.shade(s, udp[i : i + 1]) for i, s in enumerate("abab")]
        results = [f.result(timeout=120) for f in futures]
        assert queue.stats["largest_batch"] == 8
        expected = reference_frames(tiny_model, a, udp)
        np.testing.assert_allclose(np.concatenate(results), expected, atol=1e-3)
        for i, (s, future) in enumerate(zip("abab", mixed)):
            want = reference_frames(tiny_model, a if s == "a" else b, udp[i : i + 1])
            np.testing.assert_allclose(future.result(timeout=120), want, atol=1e-3)
    finally:
        queue.stop()


def test_a_sheet_asked_for_twice_at_once_is_encoded_once(tiny_model):
    """Requests arriving together for a sheet this process lacks (a Ray replica that did
    not take the upload) share one encoding; a caller that gives up spoils nothing."""
    from anirender.service.queue import ShadingQueue

    go = threading.Event()

    class HeldModel:  # encoding waits for ``go``: the requests arrive while it runs
        def __getattr__(self, name):
            return getattr(tiny_model, name)

        def encode_sheet(self, images):
            assert go.wait(120)
            return tiny_model.encode_sheet(images)

    queue = ShadingQueue(HeldModel()).start()
    images = sheet_images(seed=31)
    try:
        first, second, gives_up = (queue.add_sheet("s", images) for _ in range(3))
        gives_up.cancel()
        go.set()
        sheet, cached = first.result(timeout=120)
        again, cached_again = second.result(timeout=120)
        assert again is sheet and (cached, cached_again) == (False, True)
        assert queue.stats["sheets_encoded"] == 1
        assert queue.add_sheet("s", images).result(timeout=5) == (sheet, True)
        assert queue.stats["sheets_encoded"] == 1
        with pytest.raises(Exception, match="[Ss]heet"):  # an encoding that fails: all told
            bad = [queue.add_sheet("bad", np.zeros((2, 8, 8, 3), np.uint8)) for _ in range(2)]
            for future in bad:
                future.result(timeout=120)
        assert not queue._encoding  # nothing left pending
    finally:
        queue.stop()


def test_service_prints_its_port_and_stops_with_stdin(tiny_conr_weights):
    """The add-on's launcher relies on both: the port line, and exit when Blender goes."""
    service = start_service(tiny_conr_weights, "--exit-with-stdin", stdin=subprocess.PIPE)
    try:
        assert service.lines[0] == f"{protocol.PORT_LINE}{service.port}"
        assert httpx.get(service.url + "/v1/health").status_code == 200
        service.process.stdin.close()
        assert service.process.wait(60) == 0
    finally:
        service.kill()
