"""Careless or hostile inputs cost nothing: small files cannot make the service or the
importers allocate large amounts, and every refusal is a message (4xx), never a crash.

Memory bounds are measured, not timed: peak RSS of a subprocess (``ru_maxrss``) or of the
running service (``VmHWM`` in ``/proc/<pid>/status``), and tracemalloc in process.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from service_support import running_service, sheet_images, udp_frames

from anirender.errors import AniRenderError
from anirender.service import protocol

MIB = 1 << 20


def peak_growth_mib(setup: str, action: str) -> tuple[float, str]:
    """(growth of peak RSS in MiB while ``action`` runs, its last output line) in a fresh
    Python; ``setup`` (imports, data) runs before the first measurement."""
    code = "\n".join(
        [
            "import resource, sys",
            textwrap.dedent(setup),
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss",
            "try:",
            textwrap.indent(textwrap.dedent(action), "    "),
            "    outcome = 'ok'",
            "except Exception as exc:",
            "    outcome = f'{type(exc).__name__}: {exc}'",
            "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss",
            "print(outcome.replace(chr(10), ' '))",
            "print((after - before) / 1024)",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcome, growth = result.stdout.strip().splitlines()[-2:]
    return float(growth), outcome


def service_peak_mib(service) -> float:
    """The service process's peak resident memory so far (VmHWM)."""
    status = Path(f"/proc/{service.process.pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


@pytest.fixture(scope="module")
def service(tiny_conr_weights):
    """A service of its own (its peak memory is this module's alone), 4 MiB requests."""
    with running_service(tiny_conr_weights, "--max-request-mb", "4") as running:
        yield running


@pytest.fixture
def http(service):
    with httpx.Client(base_url=service.url + "/v1", timeout=120) as client:
        yield client


def npz_post(http, path, body, **kwargs):
    headers = {"Content-Type": protocol.NPZ_TYPE}
    return http.post(path, content=body, headers=headers, **kwargs)


# ----------------------------------------------------------------- 1. ANR config bounds


def small_anr_file(config: dict, tensors: dict | None = None) -> bytes:
    """A safetensors file of a few hundred bytes whose metadata asks for ``config``."""
    header = dict(tensors or {})
    header["__metadata__"] = {"kind": "anirender-anr", "config": json.dumps(config)}
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text


def test_a_tiny_anr_file_asking_for_a_huge_texture_is_refused_before_allocating():
    data = small_anr_file({"texture_size": 8192})
    assert len(data) < 256
    growth, outcome = peak_growth_mib(
        "from anirender.models.anr import read_anr\nimport torch",
        f"read_anr({data!r})",
    )
    assert "texture_size" in outcome and "8192" in outcome, outcome
    assert growth < 64, f"reading a {len(data)}-byte file raised peak memory by {growth:.0f} MiB"


@pytest.mark.parametrize(
    "config, message",
    [
        ({"identities": 0}, "identities is 0"),
        ({"depth": 40}, "depth is 40"),
        ({"width": "16"}, "width is '16'"),
        ({"channels": 1.5}, "channels is 1.5"),
        ({"levels": True}, "levels is True"),
        ({"texture_size": 8, "levels": 4}, "4 pyramid levels; it cannot"),
        ({"surprise": 1}, "unknown fields: surprise"),
        ({"identities": 1, "identity_names": ["a", "b"]}, "identity_names"),
        # in bounds, but the file holds none of the tensors the config implies
        ({"texture_size": 4096, "identities": 16}, "missing: "),
    ],
)
def test_anr_files_with_impossible_configs_are_refused_with_the_field_named(config, message):
    from anirender.models.anr import read_anr

    with pytest.raises(AniRenderError, match="ANR") as caught:
        read_anr(small_anr_file(config))
    assert message in str(caught.value)


def test_anr_file_whose_tensors_disagree_with_its_config_is_refused(tmp_path):
    from anirender.models.anr import ANR, ANRConfig, read_anr, save_anr

    config = ANRConfig(channels=4, texture_size=32, levels=2, width=4, depth=1)
    save_anr(ANR(config), tmp_path / "ok.safetensors")
    assert read_anr(tmp_path / "ok.safetensors").config == config
    raw = (tmp_path / "ok.safetensors").read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + length])
    header["__metadata__"]["config"] = json.dumps(
        {**json.loads(header["__metadata__"]["config"]), "texture_size": 64}
    )
    text = json.dumps(header).encode()
    with pytest.raises(AniRenderError, match="wrong shape: texture.levels"):
        read_anr(len(text).to_bytes(8, "little") + text + raw[8 + length :])


def test_service_answers_400_to_a_tiny_anr_upload_asking_for_gigabytes(service, http):
    body = protocol.pack(weights=np.frombuffer(small_anr_file({"texture_size": 8192}), np.uint8))
    before = service_peak_mib(service)
    answer = npz_post(http, "/anr", body)
    assert answer.status_code == 400, answer.text
    assert "texture_size" in answer.json()["error"]
    assert service_peak_mib(service) - before < 64


# ------------------------------------------------- 3, 4. npz bodies: bombs, shapes, twins


def npy_bytes(descr: str, shape, data: bytes = b"") -> bytes:
    """An .npy member with any header (shape may be absurd) followed by ``data``."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return header.getvalue() + data


def zip_of(*members, compress: bool = False) -> bytes:
    """A zip of (name, bytes) members, stored or deflated."""
    buffer = io.BytesIO()
    kind = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", compression=kind) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def test_compressed_npz_is_refused_without_unpacking_it():
    import tracemalloc

    unpacked = 64 * MIB
    body = zip_of(("udp.npy", npy_bytes("<f4", (unpacked // 4,), bytes(unpacked))), compress=True)
    assert len(body) < unpacked // 500
    tracemalloc.start()
    try:
        with pytest.raises(protocol.WireError, match="compressed"):
            protocol.unpack(body, ("udp",), limit=1 << 30)  # the default service's limit
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < len(body) * 4, f"a {len(body)}-byte body cost {peak / MIB:.1f} MiB"


def test_service_answers_400_to_a_compressed_upload(service, http):
    sheet = npz_post(http, "/sheets", protocol.pack(images=sheet_images())).json()["sheet_id"]
    udp = np.zeros((12, 128, 128, 4), np.float32)  # 3 MiB unpacked: under the 4 MiB limit
    body = zip_of(("udp.npy", npy_bytes("<f4", udp.shape, udp.tobytes())), compress=True)
    answer = npz_post(http, f"/sheets/{sheet}/shade", body)
    assert answer.status_code == 400, answer.text[:300]
    assert "stored members only" in answer.json()["error"]


OVERFLOWING = npy_bytes("<f4", (10**400,))


@pytest.mark.parametrize(
    "path, name",
    [
        ("/sheets", "images"),
        ("/sheets/{sheet}/shade", "udp"),
        ("/jobs?sheet_id={sheet}", "udp"),
        ("/anr", "weights"),
        ("/portraits", "portrait"),
    ],
)
def test_an_npy_header_with_an_astronomical_shape_is_a_400(http, path, name):
    sheet = npz_post(http, "/sheets", protocol.pack(images=sheet_images())).json()["sheet_id"]
    members = [(f"{name}.npy", OVERFLOWING)]
    if path.startswith("/jobs"):
        members.append(("frames.npy", npy_bytes("<i8", (1,), bytes(8))))
    answer = npz_post(http, path.format(sheet=sheet), zip_of(*members))
    assert answer.status_code == 400, answer.text[:300]
    assert f"Array '{name}' announces more data than it holds" in answer.json()["error"]


@pytest.mark.parametrize("descr", ["<V0", "|S0", "<U8", [("a", "<f4")]])
def test_npy_members_of_non_numbers_are_refused(http, descr):
    body = zip_of(("images.npy", npy_bytes(descr, (1, 128, 128, 4))))
    answer = npz_post(http, "/sheets", body)
    assert answer.status_code == 400, answer.text[:300]
    assert "only plain numbers travel" in answer.json()["error"]


def test_an_archive_holding_an_array_twice_is_refused(http):
    """The member checked must be the member read: ``images`` and ``images.npy`` (or one
    name twice) is ambiguous, whichever order they come in."""
    good = protocol.pack(images=sheet_images())
    good_member = zipfile.ZipFile(io.BytesIO(good)).read("images.npy")
    huge = npy_bytes("|u1", (16, 1024, 1024, 4), bytes(64))
    for members in (
        [("images", huge), ("images.npy", good_member)],
        [("images.npy", good_member), ("images", huge)],
        [("images.npy", huge), ("images.npy", good_member)],
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # zipfile: duplicate name
            body = zip_of(*members)
        answer = npz_post(http, "/sheets", body)
        assert answer.status_code == 400, answer.text[:300]
        assert "more than once" in answer.json()["error"]


# ------------------------------------------------- 5. pickles cannot choose an allocation


def crafted_pickles() -> dict[str, bytes]:
    """Hand-written pickles (opcodes, protocol 2) that ask the unpickler to allocate."""
    import struct

    def global_(module: str, name: str) -> bytes:
        return b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    def int4(value: int) -> bytes:
        return b"J" + struct.pack("<i", value)

    one_mib = 1 << 20
    repeated = b"\x80\x02" + global_("builtins", "bytearray") + b"q\x00"  # memo 0: bytearray
    repeated += b"B" + struct.pack("<I", one_mib) + bytes(one_mib) + b"q\x01"  # memo 1
    repeated += b"]q\x02(" + b"h\x00h\x01\x85R" * 256 + b"e."  # 256 copies of 1 MiB
    return {
        # bytearray(2**31 - 1): 2 GiB of zeros from 30 bytes
        "bytearray": b"\x80\x02" + global_("builtins", "bytearray") + int4(2**31 - 1) + b"\x85R.",
        # numpy.ndarray((10**8, 3)): 2.4 GB, uninitialised
        "ndarray": b"\x80\x02" + global_("numpy", "ndarray") + int4(10**8) + b"K\x03\x86\x85R.",
        # numpy's own _reconstruct, but with a shape of its choosing
        "reconstruct": b"\x80\x02"
        + global_("numpy.core.multiarray", "_reconstruct")
        + global_("numpy", "ndarray")
        + int4(10**8)
        + b"K\x03\x86"
        + b"C\x02f8"
        + b"\x87R.",
        # one 1 MiB string copied 256 times (the memo makes each copy cost 5 bytes)
        "repeated": repeated,
    }


@pytest.mark.parametrize("name", sorted(crafted_pickles()))
def test_a_pickle_asking_for_memory_it_does_not_hold_is_refused(tmp_path, name):
    import tracemalloc

    from anirender.models.recon.safe_pickle import BUDGET_FACTOR, BUDGET_SLACK, load_pickle_safely

    path = tmp_path / "front.pkl"
    path.write_bytes(crafted_pickles()[name])
    tracemalloc.start()
    try:
        with pytest.raises(AniRenderError, match="front.pkl: refused to read this pickle"):
            load_pickle_safely(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the budget, plus the file read, its strings read and some room
    bound = (BUDGET_FACTOR + 3) * path.stat().st_size + BUDGET_SLACK
    assert peak < bound, f"a {path.stat().st_size}-byte pickle cost {peak / MIB:.0f} MiB"
    assert bound < 32 * MIB


def test_portrait_import_of_a_crafted_pickle_fails_with_a_message(tmp_path):
    """Before: the 361-byte ndarray pickle gave 3.7 GB, NaN vertices and exit 0."""
    path = tmp_path / "front.pkl"
    path.write_bytes(crafted_pickles()["ndarray"])
    result = subprocess.run(
        [sys.executable, "-m", "anirender.cli", "import", "portrait", str(path)]
        + ["--out", str(tmp_path / "head.obj")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "refused to read this pickle" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "head.obj").exists()


# ---------------------------------------------------- 6. MRC headers that promise too much


def test_an_mrc_declaring_a_2_gb_extended_header_is_refused_without_allocating(tmp_path):
    import tracemalloc

    from recon_head import write_eg3d_mrc

    from anirender.models.recon.portrait import prepare_portrait

    path = tmp_path / "seed.mrc"
    write_eg3d_mrc(path, n=32)
    data = bytearray(path.read_bytes())
    data[92:96] = (2**31 - 1).to_bytes(4, "little")  # nsymbt: extended header bytes
    path.write_bytes(bytes(data))
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(AniRenderError, match="2147483647-byte extended header"):
            prepare_portrait(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * MIB, f"a {len(data)}-byte MRC cost {peak / MIB:.0f} MiB"


def test_an_mrc_declaring_more_voxels_than_it_holds_is_refused(tmp_path):
    from recon_head import write_eg3d_mrc

    from anirender.models.recon.portrait import prepare_portrait

    path = tmp_path / "seed.mrc"
    write_eg3d_mrc(path, n=32)
    data = bytearray(path.read_bytes())
    data[8:12] = (4096).to_bytes(4, "little")  # nz
    path.write_bytes(bytes(data))
    with pytest.raises(AniRenderError, match="declares a 32x32x4096 volume"):
        prepare_portrait(path)


# ----------------------------------------------- 7. empty or refused .pth: a message only


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "anirender.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, **(env or {})),
    )


def test_importing_empty_conr_checkpoints_says_so_without_a_traceback(tmp_path):
    from anirender.models.conr.config import OFFICIAL_FILES

    folder = tmp_path / "conr"
    folder.mkdir()
    for filename in OFFICIAL_FILES.values():
        (folder / filename).write_bytes(b"")
    result = run_cli(
        "weights", "import-conr", str(folder), env={"ANIRENDER_WEIGHTS": str(tmp_path)}
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-1500:]
    assert "not a readable PyTorch checkpoint" in result.stderr
    assert "ends before any data (empty or cut short)" in result.stderr


class NotATensor:
    """Pickled into a checkpoint: torch's weights_only loader refuses to rebuild it."""


def test_a_refused_checkpoint_keeps_the_warning_not_torchs_advice(tmp_path):
    import torch

    from anirender.errors import TORCH_UNSAFE_WARNING
    from anirender.models.reenact import load_released_checkpoint

    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": NotATensor()}, path)
    with pytest.raises(AniRenderError, match="weights_only=True refused it") as caught:
        load_released_checkpoint(path)
    message = str(caught.value)
    assert TORCH_UNSAFE_WARNING in message
    assert "NotATensor" in message  # torch's reason, not its first line
    assert "will likely succeed" not in message


# --------------------------------- 8. a web page cannot drive a token-less local service


@pytest.mark.parametrize("kind", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_post_that_is_not_npz_is_refused_with_415(service, kind):
    """What a page's cross-site "simple" POST can send (no preflight) is refused."""
    headers = {"Content-Type": kind} if kind else {}
    body = protocol.pack(images=sheet_images(seed=3))
    answer = httpx.post(service.url + "/v1/sheets", content=body, headers=headers, timeout=60)
    assert answer.status_code == 415, answer.text[:300]
    assert f"Content-Type: {protocol.NPZ_TYPE}" in answer.json()["error"]
    info = httpx.get(service.url + "/v1/info", timeout=60).json()
    assert protocol.sheet_id(sheet_images(seed=3)) not in [s["sheet_id"] for s in info["sheets"]]


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "attacker.example:8765"},  # DNS rebinding: the page's own name
        {"Host": "127.0.0.1.nip.io"},
        {"Origin": "http://attacker.example"},
        {"Origin": "null"},
    ],
)
def test_requests_naming_a_foreign_host_or_origin_are_refused_with_403(service, headers):
    for method, path in (("GET", "/v1/info"), ("POST", "/v1/sheets")):
        answer = httpx.request(
            method,
            service.url + path,
            content=protocol.pack(images=sheet_images()) if method == "POST" else None,
            headers={"Content-Type": protocol.NPZ_TYPE, **headers},
            timeout=60,
        )
        assert answer.status_code == 403, answer.text[:300]
        assert "this computer" in answer.json()["error"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Host": "localhost:1234"}, {"Origin": "http://127.0.0.1:3000"}, {"Host": "[::1]:80"}],
)
def test_local_names_are_still_served(service, headers):
    answer = httpx.get(service.url + "/v1/health", headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text[:300]


# ------------------------------------ 2. sheet memory by bytes; clients served in turn


@pytest.fixture(scope="module")
def tiny_model(tiny_conr_weights):
    from anirender.models.conr.model import CoNR

    return CoNR.from_safetensors(tiny_conr_weights)


class RecordedModel:
    """The tiny CoNR, recording which sheets each model call shades; encoding waits
    while ``go`` is clear (a busy worker)."""

    def __init__(self, model):
        self.model = model
        self.go = threading.Event()
        self.go.set()
        self.calls: list[list[str]] = []
        self.names: dict[int, str] = {}

    def encode_sheet(self, images):
        assert self.go.wait(120)
        encoding = self.model.encode_sheet(images)
        self.names[id(encoding)] = str(int(images[0, 64, 64, 0]))
        return encoding

    def render(self, encoding, udp):
        self.calls.append([self.names[id(encoding)]] * len(udp))
        return self.model.render(encoding, udp)


def test_cached_sheets_stay_within_their_memory_budget(tiny_model):
    from anirender.service.queue import ShadingQueue, UnknownSheet
    from anirender.service.store import nbytes_of

    one = nbytes_of(tiny_model.encode_sheet(sheet_images(seed=20)))
    assert one > 100_000  # the tensors are counted
    queue = ShadingQueue(tiny_model, max_sheets=16, max_sheet_bytes=int(2.5 * one)).start()
    try:
        for seed in range(20, 24):
            queue.add_sheet(f"s{seed}", sheet_images(seed=seed)).result(timeout=120)
            assert queue.sheet_bytes <= 2.5 * one
        assert [s.sheet_id for s in queue.sheets()] == ["s22", "s23"]
        with pytest.raises(UnknownSheet, match="Upload the sheet again"):
            queue.sheet("s20")
    finally:
        queue.stop()


def test_service_reports_its_sheet_memory(http):
    npz_post(http, "/sheets", protocol.pack(images=sheet_images(seed=7)))
    cache = http.get("/info").json()["sheet_cache"]
    assert 0 < cache["bytes"] <= cache["max_bytes"] == 2048 * MIB


def test_one_frame_of_another_client_does_not_wait_behind_a_long_sequence(tiny_model):
    from anirender.service.queue import ShadingQueue

    model = RecordedModel(tiny_model)
    queue = ShadingQueue(model, max_batch=2).start()
    try:
        sheets = {name: sheet_images(seed=seed) for name, seed in (("a", 30), ("b", 31))}
        for name, images in sheets.items():
            queue.add_sheet(name, images).result(timeout=120)
        a, b = (model.names[id(queue.sheet(n).encoding)] for n in "ab")
        model.go.clear()
        busy = queue.add_sheet("c", sheet_images(seed=32), client="C")  # the worker waits
        job = queue.submit_job("a", udp_frames(24), np.arange(24), client="A")
        single = queue.shade("b", udp_frames(1, seed=9), client="B")
        model.go.set()
        busy.result(timeout=120)
        single.result(timeout=120)
        while job.state == "running":
            time.sleep(0.05)
        assert job.state == "done"
        # A's first batch, then B's frame, then the rest of A's sequence
        assert model.calls[0] == [a, a] and model.calls[1] == [b]
        assert sum(len(c) for c in model.calls[2:]) == 22
    finally:
        queue.stop()


# ------------------------------------------- 9. a client that hangs up costs no shading


@contextlib.contextmanager
def app_on_loopback(queue):
    """The service's app around ``queue`` on 127.0.0.1 (uvicorn in a thread), so a test
    can hold the worker while real HTTP clients come and go."""
    import socket

    import uvicorn

    from anirender.service.app import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    app = create_app(queue, max_request_bytes=8 * MIB, local_only=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    end = time.monotonic() + 60
    while not server.started and time.monotonic() < end:
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def raw_post(port: int, path: str, body: bytes, send: int | None = None, before_hanging_up=None):
    """POST ``body`` (or its first ``send`` bytes) and hang up without reading the answer,
    once ``before_hanging_up()`` (if given) has returned."""
    import socket

    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {protocol.NPZ_TYPE}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(head + body[:send])
        if before_hanging_up is not None:
            before_hanging_up()


def wait_for(condition, what: str, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"never happened: {what}"
        time.sleep(0.05)


def test_frames_of_a_client_that_hung_up_are_not_shaded(tiny_model):
    from anirender.service.queue import ShadingQueue

    model = RecordedModel(tiny_model)
    queue = ShadingQueue(model, max_batch=4).start()
    try:
        queue.add_sheet("s", sheet_images(seed=40)).result(timeout=120)
        with app_on_loopback(queue) as port:
            info = lambda: httpx.get(f"http://127.0.0.1:{port}/v1/info", timeout=60).json()  # noqa: E731
            model.go.clear()
            busy = queue.add_sheet("busy", sheet_images(seed=41), client="other")
            raw_post(
                port,
                "/v1/sheets/s/shade",
                protocol.pack(udp=udp_frames(12)),
                before_hanging_up=lambda: wait_for(lambda: queue.depth == 12, "frames queued"),
            )
            wait_for(lambda: info()["stats"]["requests_abandoned"] == 1, "hang-up noticed")
            model.go.set()
            busy.result(timeout=120)
            wait_for(lambda: info()["queue_depth"] == 0, "queue drained")
            stats = info()["stats"]
        assert stats["frames_dropped"] == 12 and stats["frames_shaded"] == 0, stats
        assert model.calls == []
    finally:
        queue.stop()


def test_a_client_hanging_up_mid_upload_leaves_no_traceback_in_the_log(service, http):
    sheet = npz_post(http, "/sheets", protocol.pack(images=sheet_images())).json()["sheet_id"]
    body = protocol.pack(udp=udp_frames(8))
    raw_post(service.port, f"/v1/sheets/{sheet}/shade", body, send=len(body) // 2)
    raw_post(service.port, "/v1/sheets", protocol.pack(images=sheet_images()), send=1000)
    wait_for(lambda: http.get("/info").json()["stats"]["requests_abandoned"] >= 2, "hang-ups")
    assert http.get("/health").json()["status"] == "ok"
    assert not [line for line in service.lines if "Traceback" in line], service.lines[-40:]


# ------------------------------------------------------------------------ 10. smaller


def test_extreme_but_finite_vertices_fail_the_import_instead_of_writing_nan(tmp_path):
    import pickle

    verts = np.array([[-1, -1, -1], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float64) * 1.7e308
    faces = np.array([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]], np.int64)
    path = tmp_path / "front.pkl"
    path.write_bytes(pickle.dumps({"verts": verts, "faces": faces}, protocol=4))
    result = run_cli("import", "portrait", str(path), "--out", str(tmp_path / "head.obj"))
    assert result.returncode != 0, result.stdout[-500:]
    assert "too large to import" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "head.obj").exists()


def test_a_frame_number_beyond_blenders_range_is_refused_not_wrapped(service, http):
    sheet = npz_post(http, "/sheets", protocol.pack(images=sheet_images())).json()["sheet_id"]
    frames = np.array([2**64 - 1], np.uint64)  # was stored as -1
    body = protocol.pack(udp=udp_frames(1), frames=frames)
    answer = npz_post(http, "/jobs", body, params={"sheet_id": sheet})
    assert answer.status_code == 400, answer.text[:300]
    assert "Blender's frame range" in answer.json()["error"]
    good = protocol.pack(udp=udp_frames(1), frames=np.array([-5], np.int64))
    assert npz_post(http, "/jobs", good, params={"sheet_id": sheet}).status_code == 200


def test_a_job_from_before_a_restart_is_reported_as_such(tiny_model):
    from anirender.service.queue import ShadingQueue, UnknownJob

    before = ShadingQueue(tiny_model).start()
    try:
        before.add_sheet("s", sheet_images()).result(timeout=120)
        job = before.submit_job("s", udp_frames(1), np.arange(1))
    finally:
        before.stop()
    after = ShadingQueue(tiny_model).start()  # the service, restarted
    try:
        with pytest.raises(UnknownJob, match="earlier run of the shader service"):
            after.job(job.job_id)
        with pytest.raises(UnknownJob, match="no such job"):
            after.job(f"{after.run_id}-0123")
    finally:
        after.stop()


def test_serve_help_recommends_the_token_variable_over_the_flag():
    result = run_cli("serve", "--help")
    text = " ".join(result.stdout.split())
    assert f"Prefer setting ${protocol.TOKEN_ENV} instead" in text
    assert "shows in `ps`" in text


def test_uploaded_anr_models_stay_within_their_memory_budget(tmp_path):
    import torch

    from anirender.models.anr import ANR, ANRConfig, save_anr
    from anirender.service.anr_models import AnrLibrary

    library = AnrLibrary(max_models=8, max_bytes=3 * MIB)
    ids = []
    for seed in range(3):
        torch.manual_seed(seed)
        path = tmp_path / f"m{seed}.safetensors"
        save_anr(ANR(ANRConfig(texture_size=128)), path)  # about 2.4 MiB of weights
        ids.append(library.add(path.read_bytes())[0])
        assert library._models.bytes <= 3 * MIB
    assert library.ids() == ids[-1:]
