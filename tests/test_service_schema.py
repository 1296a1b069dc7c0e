"""Schemathesis against the live service's OpenAPI spec: no request makes it fail (5xx)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from service_support import sheet_images

from anirender.service import protocol


@schemathesis.serializer(protocol.NPZ_TYPE)
def _raw_bytes(ctx, value):
    """Generated bodies go out as they are: arbitrary bytes where an .npz belongs."""
    if isinstance(value, bytes):
        return value
    return str(value).encode()


@pytest.fixture(scope="module")
def known_sheet(shader_service) -> str:
    answer = httpx.post(
        shader_service.url + "/v1/sheets",
        content=protocol.pack(images=sheet_images()),
        headers={"Content-Type": protocol.NPZ_TYPE},
        timeout=60,
    )
    return answer.json()["sheet_id"]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_breaks_the_service(shader_service, known_sheet, mode):
    """Every operation of the spec, a bounded number of generated requests each: requests
    that follow the spec, then requests that break it (wrong types, missing or extra
    parameters, other content types)."""
    schema = schemathesis.openapi.from_url(shader_service.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    seen, unbreakable = [], []

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=15,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def no_server_error(case):
            # some requests aim at a real sheet so that their bodies get read
            if case.path_parameters and "sheet_id" in case.path_parameters:
                if case.method == "POST":
                    case.path_parameters["sheet_id"] = known_sheet
            if case.query and "sheet_id" in case.query and len(seen) % 2:
                case.query["sheet_id"] = known_sheet
            response = case.call(base_url=shader_service.url, timeout=60)
            seen.append(response.status_code)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
            )

        try:
            no_server_error()
        except Unsatisfiable:  # nothing in the spec to break (text ids, a binary body)
            assert mode == GenerationMode.NEGATIVE
            unbreakable.append(operation.label)
    # negative cases exist where the spec constrains something: the integer queries
    assert len(operations) - len(unbreakable) >= (3 if mode == GenerationMode.NEGATIVE else 9)
    assert len(seen) >= 3 * (len(operations) - len(unbreakable))
    assert any(400 <= code < 500 for code in seen)  # malformed requests were tried


def test_still_shades_after_the_fuzzing(shader_service, known_sheet):
    udp = np.zeros((1, 128, 128, 4), np.float32)
    answer = httpx.post(
        f"{shader_service.url}/v1/sheets/{known_sheet}/shade",
        content=protocol.pack(udp=udp),
        headers={"Content-Type": protocol.NPZ_TYPE},
        timeout=60,
    )
    assert answer.status_code == 200
