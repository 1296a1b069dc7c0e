"""Rows for a shader's execution choices (``models.execution``), side by side in one run.

Baseline: the plain fp32 default, one frame per network call, nothing timed. Against it:
the choice timed in fp32 (exact) and the one timed with reduced precision allowed
(``fast``: bf16 where the CPU has it natively, fp16 on a GPU). Interleaved rounds, the
median counts; the check column is max |difference| to the baseline in fp32 and the PSNR
against it otherwise.
"""

import statistics
import time

import numpy as np
import torch

from anirender.models.execution import ENV, parse_request

BASELINE = "fp32, 1 frame per call, not timed"


def requests():
    return {
        BASELINE: parse_request(batch=1, env={ENV: "off"}),
        "fp32, timed choice": parse_request("fp32", env={}),
        "fast, timed choice": parse_request("fast", env={}),
    }


def compare(make, render, frames: int, rounds: int = 3) -> list[str]:
    """``make(request)`` -> a shader; ``render(shader)`` shades ``frames`` frames in one
    call and returns them. Returns markdown rows: path | s per frame | speed-up | check."""
    shaders = {name: make(request) for name, request in requests().items()}
    pictures = {name: render(shader) for name, shader in shaders.items()}  # choices timed here
    times = {name: [] for name in shaders}
    for _ in range(rounds):
        for name, shader in shaders.items():
            start = time.perf_counter()
            render(shader)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - start) / frames)
    median = {name: statistics.median(t) for name, t in times.items()}
    rows = []
    base = pictures[BASELINE]
    for name, shader in shaders.items():
        diff = np.abs(pictures[name] - base)
        if shader.execution is not None and shader.execution.precision != "fp32":
            psnr = 10 * np.log10(1.0 / max(float(np.mean(diff**2)), 1e-20))
            check = f"PSNR {psnr:.1f} dB"
        else:
            check = f"max diff {diff.max():.1e}"
        how = shader.execution.describe() if shader.execution is not None else ""
        ratio = median[BASELINE] / median[name]
        rows.append(f"| {name} | {median[name]:.4f} | {ratio:.2f}x | {check} | {how} |")
    return rows


HEADER = ["| path | s per frame | vs baseline | check | execution |", "|---|---|---|---|---|"]
