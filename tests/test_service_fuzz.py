"""The fuzz pass's hand-written half: every crafted body in tests/data/crafted (written by
``crafted_bodies``) gets a 4xx at every endpoint that reads its array name, and the
service's peak memory grows by no more than a small multiple of its request limit; every
crafted pickle is refused within the unpickler's budget. (The generated half is
schemathesis over the OpenAPI spec: ``test_service_schema``.)"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import httpx
import numpy as np
import pytest
from crafted_bodies import FOLDER, NAMES, NPZ_KINDS, crafted_pickles, expected_files
from service_support import running_service, sheet_images

from anirender.errors import AniRenderError
from anirender.service import protocol

MIB = 1 << 20
LIMIT_MB = 4
NPZ = {"Content-Type": protocol.NPZ_TYPE}


def test_the_crafted_files_are_what_their_generator_writes():
    """tests/data/crafted is kept in step with tests/crafted_bodies.py."""
    expected = expected_files()
    on_disk = {p.name: p.read_bytes() for p in FOLDER.iterdir()}
    assert set(on_disk) == set(expected), "run: python tests/crafted_bodies.py"
    stale = sorted(name for name in expected if on_disk[name] != expected[name])
    assert not stale, f"rewrite with python tests/crafted_bodies.py: {stale[:5]}"
    assert len(expected) == len(NAMES) * len(NPZ_KINDS) + len(crafted_pickles())


def _portrait() -> np.ndarray:
    yy, xx = np.mgrid[:64, :64]
    image = np.zeros((64, 64, 4), np.uint8)
    image[((xx - 32) / 22) ** 2 + ((yy - 32) / 26) ** 2 < 1] = (235, 200, 180, 255)
    return image


def _peak_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmHWM:")).split()[1]) / 1024


def test_every_crafted_body_is_a_4xx_within_the_memory_bound(tiny_conr_weights):
    with running_service(tiny_conr_weights, "--max-request-mb", str(LIMIT_MB)) as service:
        with httpx.Client(base_url=service.url + "/v1", timeout=120, headers=NPZ) as http:
            sheet = http.post("/sheets", content=protocol.pack(images=sheet_images()))
            portrait = http.post("/portraits", content=protocol.pack(portrait=_portrait()))
            assert sheet.status_code == portrait.status_code == 200, portrait.text
            paths = {
                "images": ["/sheets"],
                "udp": [f"/sheets/{sheet.json()['sheet_id']}/shade"],
                "weights": ["/anr"],
                "portrait": ["/portraits"],
                "poses": [f"/portraits/{portrait.json()['portrait_id']}/reenact"],
            }

            def one_pass() -> list[str]:
                wrong = []
                for name in NAMES:
                    for kind in NPZ_KINDS:
                        body = (FOLDER / f"{name}.{kind}.npz").read_bytes()
                        for path in paths[name]:
                            answer = http.post(path, content=body)
                            if not 400 <= answer.status_code < 500 or "error" not in answer.json():
                                wrong.append(
                                    f"{path} {kind}: {answer.status_code} {answer.text[:200]}"
                                )
                return wrong

            assert one_pass() == []  # the first pass also loads what the handlers import
            before = _peak_mib(service.process.pid)
            assert one_pass() == []
            growth = _peak_mib(service.process.pid) - before
            assert http.get("/health").json()["status"] == "ok"
    assert growth <= 8 * LIMIT_MB, f"the crafted bodies raised peak memory by {growth:.0f} MiB"
    assert not [line for line in service.lines if "Traceback" in line]


@pytest.mark.parametrize("kind", sorted(crafted_pickles()))
def test_every_crafted_pickle_is_refused_within_its_budget(kind):
    from anirender.models.recon.safe_pickle import (
        BUDGET_FACTOR,
        BUDGET_SLACK,
        load_pickle_safely,
    )

    path = FOLDER / f"{kind}.pkl"
    tracemalloc.start()
    try:
        with pytest.raises(AniRenderError, match=f"{kind}.pkl: "):
            load_pickle_safely(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < (BUDGET_FACTOR + 3) * path.stat().st_size + BUDGET_SLACK
