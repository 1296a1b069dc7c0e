"""The shader service as Ray Serve replicas (``anirender serve --ray``).

One local Ray cluster on 127.0.0.1 (``ray.init(num_cpus=2)``) serves the whole module;
``anirender serve --ray --address`` deploys two replicas of the app on it (tiny seeded
weights, a token, the 4 MiB limit of the plain service's tests) and is compared request
for request with the plain ``anirender serve`` (conftest's ``shader_service``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from service_support import SIZE, reference_frames, running_service, sheet_images, udp_frames

from anirender.addon.shading.clients import HttpClient
from anirender.service import protocol

# Ray 2.60's own pydantic models warn on import, and Starlette's test client asks for a
# newer httpx than the service's pin; neither is ours to fix
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray"),
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
]

TOKEN = "ray-s3cret"
#: the token, and the content type every POST body carries (GETs ignore it)
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": protocol.NPZ_TYPE}


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(
        num_cpus=2,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        namespace="anirender-tests",
        logging_level="WARNING",
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_service(ray_cluster, tiny_conr_weights):
    """``anirender serve --ray`` with two replicas on the module's cluster."""
    args = ("--ray", "--address", ray_cluster, "--replicas", "2", "--token", TOKEN)
    with running_service(tiny_conr_weights, *args, "--max-request-mb", "4", timeout=300) as service:
        yield service


@pytest.fixture(scope="module")
def tiny_model(tiny_conr_weights):
    from anirender.models.conr.model import CoNR

    return CoNR.from_safetensors(tiny_conr_weights)


@pytest.fixture
def on_ray(ray_service):
    with httpx.Client(base_url=ray_service.url + "/v1", headers=AUTH, timeout=120) as client:
        yield client


@pytest.fixture
def plain(shader_service):
    npz = {"Content-Type": protocol.NPZ_TYPE}
    with httpx.Client(base_url=shader_service.url + "/v1", timeout=120, headers=npz) as client:
        yield client


def upload(http, images) -> str:
    answer = http.post("/sheets", content=protocol.pack(images=images))
    assert answer.status_code == 200, answer.text
    return answer.json()["sheet_id"]


def shade(http, sheet_id, udp) -> np.ndarray:
    answer = http.post(f"/sheets/{sheet_id}/shade", content=protocol.pack(udp=udp))
    assert answer.status_code == 200, answer.text
    assert float(answer.headers[protocol.SHADING_SECONDS]) > 0
    return protocol.unpack(answer.content, ("rgba",), 1 << 28)["rgba"]


def replica_infos(http, want: int = 2, tries: int = 60) -> dict:
    """``/info`` of each replica (by replica id), asked until ``want`` replicas answered."""
    seen = {}
    for _ in range(tries):
        info = http.get("/info").json()
        seen[info["ray"]["replica"]] = info
        if len(seen) >= want:
            break
    return seen


def test_two_replicas_shade_like_the_plain_service(on_ray, plain, tiny_model):
    assert on_ray.get("/health").json() == plain.get("/health").json()
    images, udp = sheet_images(seed=81), udp_frames(4, seed=82)
    sheet_id = upload(on_ray, images)
    assert upload(plain, images) == sheet_id
    for _ in range(4):  # whichever replica takes it: the service has the sheet already
        again = on_ray.post("/sheets", content=protocol.pack(images=images)).json()
        assert again == {
            "sheet_id": sheet_id,
            "views": 2,
            "size": SIZE,
            "shader": "conr",
            "cached": True,
        }
    expected = reference_frames(tiny_model, images, udp)
    np.testing.assert_allclose(shade(on_ray, sheet_id, udp), expected, atol=1e-3)
    np.testing.assert_allclose(shade(on_ray, sheet_id, udp), shade(plain, sheet_id, udp), atol=1e-3)

    # concurrent requests spread over both replicas; the sheet was uploaded once, and a
    # replica that did not take the upload shades with it all the same
    def one_frame(i):
        return shade(on_ray, sheet_id, udp[i % 4 : i % 4 + 1])

    for _ in range(20):
        with ThreadPoolExecutor(4) as pool:
            frames = list(pool.map(one_frame, range(8)))
        for i, frame in enumerate(frames):
            np.testing.assert_allclose(frame, expected[i % 4 : i % 4 + 1], atol=1e-3)
        infos = replica_infos(on_ray)
        if len(infos) == 2 and all(i["stats"]["frames_shaded"] for i in infos.values()):
            break
    assert len(infos) == 2, "only one replica answered"
    for info in infos.values():
        assert info["stats"]["frames_shaded"] > 0 and info["stats"]["sheets_encoded"] == 1
        assert sheet_id in [s["sheet_id"] for s in info["sheets"]]
        assert info["models"]["conr"]["config"]["width"] == pytest.approx(1 / 16)
    assert len({i["ray"]["pid"] for i in infos.values()}) == 2


def _bad_bodies() -> list[tuple[bytes, str]]:
    return [
        (b"", "needs an .npz body"),
        (b"not a zip", "not an .npz archive"),
        (protocol.pack(other=np.zeros(3)), "lacks udp"),
        (protocol.pack(udp=udp_frames(1).astype(np.float64)), "must be float32"),
        (protocol.pack(udp=np.zeros((1, 256, 256, 4), np.float32)), "same working size"),
        (protocol.pack(udp=np.full((1, SIZE, SIZE, 4), np.nan, np.float32)), "NaN"),
    ]


def test_errors_and_limits_are_the_plain_services(on_ray, plain):
    sheet_id = upload(on_ray, sheet_images(seed=83))
    upload(plain, sheet_images(seed=83))
    for body, message in _bad_bodies():
        ours = on_ray.post(f"/sheets/{sheet_id}/shade", content=body)
        theirs = plain.post(f"/sheets/{sheet_id}/shade", content=body)
        assert (ours.status_code, ours.json()) == (theirs.status_code, theirs.json())
        assert ours.status_code == 400 and message in ours.json()["error"]
    opaque = protocol.pack(images=np.full((1, SIZE, SIZE, 4), 255, np.uint8))
    ours, theirs = on_ray.post("/sheets", content=opaque), plain.post("/sheets", content=opaque)
    assert ours.status_code == theirs.status_code == 400
    assert ours.json() == theirs.json()
    # a sheet no replica and no directory knows: the 404 the client uploads again after
    unknown = protocol.pack(udp=udp_frames(1))
    ours = on_ray.post("/sheets/nope/shade", content=unknown)
    assert ours.status_code == 404 and "Upload the sheet again" in ours.json()["error"]
    assert ours.json() == plain.post("/sheets/nope/shade", content=unknown).json()

    big = protocol.pack(udp=udp_frames(18))  # 18 x 256 KiB: over the 4 MiB limit
    ours = on_ray.post(f"/sheets/{sheet_id}/shade", content=big)
    assert ours.status_code == 413
    assert ours.json() == plain.post(f"/sheets/{sheet_id}/shade", content=big).json()

    def chunks():  # no Content-Length: the limit holds while streaming through the proxy
        for i in range(0, len(big), 1 << 20):
            yield big[i : i + (1 << 20)]

    ours = on_ray.post(f"/sheets/{sheet_id}/shade", content=chunks())
    assert ours.status_code == 413 and "larger than the service accepts" in ours.json()["error"]
    # a sequence job would live on one replica while its polls reach either: refused
    jobs = on_ray.post(
        "/jobs",
        params={"sheet_id": sheet_id},
        content=protocol.pack(udp=udp_frames(2), frames=np.arange(2)),
    )
    assert jobs.status_code == 400 and "shade requests" in jobs.json()["error"]
    assert on_ray.get("/health").json()["status"] == "ok"


def test_token_is_required_on_every_request(ray_service):
    with httpx.Client(base_url=ray_service.url + "/v1", timeout=60) as http:
        for path in ("/health", "/info", "/sheets/x"):
            assert http.get(path).status_code == 401
            wrong = http.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and "token" in wrong.json()["error"]
        assert http.post("/sheets", content=b"x").status_code == 401
        assert httpx.get(ray_service.url + "/openapi.json").status_code == 401
        assert http.get("/health", headers=AUTH).json()["status"] == "ok"


def test_a_replica_killed_mid_sequence_loses_no_frame(ray_service, tiny_model):
    """Three render threads shade a sequence frame by frame through the add-on's client
    while one replica is killed: every frame comes back once, equal to a single-process
    run, and Serve starts a new replica."""
    images, udp = sheet_images(seed=91), udp_frames(24, seed=92)
    expected = reference_frames(tiny_model, images, udp)
    client = HttpClient(ray_service.url, token=TOKEN)
    sheet_id = client.upload_sheet(images)
    with httpx.Client(base_url=ray_service.url + "/v1", headers=AUTH, timeout=60) as http:
        victim = next(iter(replica_infos(http).values()))["ray"]
    results: dict[int, list[np.ndarray]] = {i: [] for i in range(len(udp))}
    started = threading.Semaphore(0)

    def render(frames):
        for i in frames:
            results[i].append(client.shade(sheet_id, udp[i : i + 1])[0])
            started.release()

    with ThreadPoolExecutor(3) as pool:
        work = [pool.submit(render, range(t, len(udp), 3)) for t in range(3)]
        for _ in range(3):  # the sequence is under way
            assert started.acquire(timeout=120)
        os.kill(victim["pid"], signal.SIGKILL)
        for job in work:
            job.result(timeout=300)
    for i, shaded in results.items():
        assert len(shaded) == 1, f"frame {i} arrived {len(shaded)} times"
        np.testing.assert_allclose(shaded[0], expected[i], atol=1e-3)

    with httpx.Client(base_url=ray_service.url + "/v1", headers=AUTH, timeout=60) as http:
        end = time.monotonic() + 120
        while time.monotonic() < end:
            infos = replica_infos(http, tries=10)
            if len(infos) == 2 and victim["replica"] not in infos:
                break
            time.sleep(1)
        assert victim["replica"] not in infos and len(infos) == 2
        # the new replica shades with the sheet it never saw uploaded
        np.testing.assert_allclose(client.shade(sheet_id, udp[:2]), expected[:2], atol=1e-3)


def _tiny_anr_bytes(path) -> bytes:
    """A tiny untrained ANR (two identities, random textures) as safetensors bytes."""
    import torch

    from anirender.models.anr import ANR, ANRConfig, save_anr

    torch.manual_seed(0)
    model = ANR(ANRConfig(identities=2, channels=4, texture_size=32, levels=2, width=4, depth=1))
    with torch.no_grad():
        for level in model.texture.levels:
            level.normal_()
    save_anr(model, path)
    return path.read_bytes()


def test_upload_directory_serves_apps_that_never_saw_the_upload(ray_cluster, tiny_model, tmp_path):
    """Three copies of the app with their own queues and libraries and one upload
    directory (a Ray actor): a sheet, an ANR model and a portrait uploaded to the first
    are used by the second as if uploaded there; what is deleted is gone for the third."""
    import ray
    from fastapi.testclient import TestClient

    from anirender.service.app import create_app
    from anirender.service.portraits import PortraitLibrary
    from anirender.service.queue import ShadingQueue
    from anirender.service.ray_serve import NAMESPACE, SharedUploads, UploadDirectory

    directory = UploadDirectory.options(name="test-uploads", namespace=NAMESPACE).remote()
    queues = [ShadingQueue(tiny_model).start() for _ in range(3)]
    libraries = [PortraitLibrary(device="cpu") for _ in range(3)]
    apps = [
        TestClient(
            create_app(q, portraits=lib, shared=SharedUploads("test-uploads")),
            headers={"Content-Type": protocol.NPZ_TYPE},
        )
        for q, lib in zip(queues, libraries)
    ]
    first, second, third = (app.post for app in apps)

    def arrays(answer, *names):
        assert answer.status_code == 200, answer.text
        return protocol.unpack(answer.content, names, 1 << 28)

    try:
        images, udp = sheet_images(seed=95), udp_frames(2, seed=96)
        sheet_id = first("/v1/sheets", content=protocol.pack(images=images)).json()["sheet_id"]
        assert apps[1].get(f"/v1/sheets/{sheet_id}").json()["views"] == 2
        rgba = arrays(
            second(f"/v1/sheets/{sheet_id}/shade", content=protocol.pack(udp=udp)), "rgba"
        )
        np.testing.assert_allclose(
            rgba["rgba"], reference_frames(tiny_model, images, udp), atol=1e-3
        )
        assert [q.stats["sheets_encoded"] for q in queues] == [1, 1, 0]

        weights = _tiny_anr_bytes(tmp_path / "anr.safetensors")
        body = protocol.pack(weights=np.frombuffer(weights, np.uint8))
        model_id = first("/v1/anr", content=body).json()["model_id"]
        rng = np.random.default_rng(97)
        passes = protocol.pack(
            uv=rng.random((1, 32, 32, 4), np.float32), normal=rng.random((1, 32, 32, 4), np.float32)
        )
        shaded = [
            arrays(post(f"/v1/anr/{model_id}/shade?identity=1", content=passes), "rgba")
            for post in (first, second)
        ]
        np.testing.assert_array_equal(shaded[0]["rgba"], shaded[1]["rgba"])

        portrait = sheet_images(views=1, size=64, seed=98)[0]  # a cut-out ellipse
        portrait_id = first("/v1/portraits", content=protocol.pack(portrait=portrait)).json()[
            "portrait_id"
        ]
        turned = [0.0] * 12 + [1.0, 0, 0, 0, 0] + [0.0, -10.0, 25.0]  # mouth "a", head turned
        poses = protocol.pack(poses=np.array([turned], np.float32))
        posed = [
            arrays(post(f"/v1/portraits/{portrait_id}/reenact", content=poses), "rgba")
            for post in (first, second)
        ]
        np.testing.assert_allclose(posed[0]["rgba"], posed[1]["rgba"], atol=1e-5)

        for path in (f"/v1/sheets/{sheet_id}", f"/v1/portraits/{portrait_id}"):
            assert apps[1].delete(path).json()["deleted"] is True
        gone = third(f"/v1/sheets/{sheet_id}/shade", content=protocol.pack(udp=udp))
        assert gone.status_code == 404 and "Upload the sheet again" in gone.json()["error"]
        assert apps[2].get(f"/v1/portraits/{portrait_id}").status_code == 404
    finally:
        for queue, library in zip(queues, libraries):
            queue.stop()
            library.stop()
        ray.kill(directory)


def test_ray_is_optional():
    """Without Ray the plain command and the add-on's client load, and --ray says how
    to get it; the Ray options alone are refused."""
    script = (
        "import sys; sys.modules['ray'] = None\n"  # an import of ray now fails
        "import anirender.cli, anirender.addon.shading.clients\n"
        "from anirender.cli import main\n"
        "sys.exit(main(['serve', '--ray', '--device', 'cpu']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert 'pip install "anirender[ray]"' in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "anirender.cli", "serve", "--replicas", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "go with --ray" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "anirender.cli", "serve", "--ray", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "without a token" in result.stderr
