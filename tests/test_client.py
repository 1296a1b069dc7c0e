"""The add-on's client over real HTTP: concurrency, restarts, tokens, in-process parity."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from service_support import reference_frames, running_service, sheet_images, udp_frames

from anirender.addon.shading.clients import HttpClient, InProcessClient, ServiceUnavailable
from anirender.errors import AniRenderError


@pytest.fixture(scope="module")
def tiny_model(tiny_conr_weights):
    from anirender.models.conr.model import CoNR

    return CoNR.from_safetensors(tiny_conr_weights)


def test_four_concurrent_clients_get_their_own_frames(shader_service, tiny_model):
    """Four clients, two sheets, interleaved requests: no frame lost, swapped or mixed."""
    sheets = [sheet_images(seed=31), sheet_images(seed=32)]
    udp = [udp_frames(6, seed=40 + c) for c in range(4)]
    expected = [reference_frames(tiny_model, sheets[c % 2], udp[c]) for c in range(4)]
    batches_before = httpx.get(shader_service.url + "/v1/info").json()["stats"]

    def one_client(c):
        client = HttpClient(shader_service.url)
        sheet_id = client.upload_sheet(sheets[c % 2])
        # one frame, then two, then three: requests of different sizes interleave
        parts = [client.shade(sheet_id, udp[c][a:b]) for a, b in ((0, 1), (1, 3), (3, 6))]
        return np.concatenate(parts)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one_client, range(4)))
    for c in range(4):
        np.testing.assert_allclose(results[c], expected[c], atol=1e-3)
        for other in range(4):  # every client's frames differ from every other's
            if other != c:
                assert np.abs(results[c] - expected[other]).max() > 0.05
    stats = httpx.get(shader_service.url + "/v1/info").json()["stats"]
    assert stats["frames_shaded"] - batches_before["frames_shaded"] == 24


def test_client_uploads_the_sheet_again_after_a_restart(tiny_conr_weights, tiny_model):
    images, udp = sheet_images(seed=51), udp_frames(2, seed=52)
    want = reference_frames(tiny_model, images, udp)
    with running_service(tiny_conr_weights) as first:
        client = HttpClient(first.url)
        sheet_id = client.upload_sheet(images)
        np.testing.assert_allclose(client.shade(sheet_id, udp[:1]), want[:1], atol=1e-3)
        first.kill()
        with pytest.raises(ServiceUnavailable, match="does not answer"):
            client.shade(sheet_id, udp[1:])
    with running_service(tiny_conr_weights) as second:
        client.url = second.url  # the same client, pointed at the new service
        np.testing.assert_allclose(client.shade(sheet_id, udp[1:]), want[1:], atol=1e-3)
        assert httpx.get(second.url + "/v1/info").json()["stats"]["sheets_encoded"] == 1


def test_client_messages_for_token_and_bad_input(tiny_conr_weights):
    with running_service(tiny_conr_weights, "--token", "abc") as service:
        with pytest.raises(AniRenderError, match="refused the token"):
            HttpClient(service.url, token="wrong").info()
        client = HttpClient(service.url, token="abc")
        assert client.info()["device"] == "cpu"
        with pytest.raises(AniRenderError, match="do not know sheet|upload it first"):
            client.shade("0" * 24, udp_frames(1))
    with pytest.raises(AniRenderError, match="must start with http"):
        HttpClient("127.0.0.1:8765")
    with pytest.raises(AniRenderError, match="float32|multiple of 128|XYZV"):
        HttpClient("http://127.0.0.1:9").shade("x", np.zeros((1, 100, 100, 4), np.float32))


def test_in_process_client_matches_the_model(tiny_conr_weights, tiny_model):
    client = InProcessClient(str(tiny_conr_weights), device="cpu")
    images, udp = sheet_images(seed=61), udp_frames(3, seed=62)
    sheet_id = client.upload_sheet(images)
    want = reference_frames(tiny_model, images, udp)
    np.testing.assert_allclose(client.shade(sheet_id, udp), want, atol=1e-5)
    assert client.info()["device"] == "cpu"


def test_sequence_jobs_through_the_client(shader_service, tiny_model):
    import time

    client = HttpClient(shader_service.url)
    images, udp = sheet_images(seed=71), udp_frames(4, seed=72)
    sheet_id = client.upload_sheet(images)
    job_id = client.submit_sequence(sheet_id, udp, [7, 8, 9, 10])
    while client.sequence_progress(job_id)["state"] == "running":
        time.sleep(0.1)
    assert client.sequence_progress(job_id)["done"] == 4
    got = client.sequence_results(job_id, start=0, limit=4)
    assert got["frames"].tolist() == [7, 8, 9, 10]
    want = reference_frames(tiny_model, images, udp)
    np.testing.assert_allclose(got["rgba"], want, atol=1e-3)
    assert client.cancel_sequence(job_id)["state"] == "done"  # too late to cancel
