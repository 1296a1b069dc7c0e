"""How a shader runs on this machine, chosen once by timing, logged, and forceable.

An :class:`Execution` is one way to run a network: precision, memory layout, frames per
call, images per convolution batch, threads, Winograd convolutions (CPU fp32,
``models.winograd``; the 3x3 and the transposed ones chosen apart, as CPUs differ on
them), C kernels built on this machine (CPU, ``models.native``), ``torch.compile`` and
CUDA graphs. The
shaders (CoNR, guided, ANR) list the candidates they support; :func:`choose` times each
on the job's own inputs, keeps the fastest per frame, logs the table and remembers the
choice on disk for this machine, so the timing happens once. One frame per call in fp32
is always a candidate, so no choice is slower than that on the probe.

What the user allowed or forced comes from the command line (``--precision``,
``--batch``, ``--threads``) and the ``ANIRENDER_EXECUTION`` environment variable, e.g.
``ANIRENDER_EXECUTION="precision=bf16,batch=1,layout=nchw,chunk=4,threads=2,winograd=off"``
(``winograd`` sets both kinds of Winograd convolution, ``winograd_transposed`` the
transposed ones alone; ``native=on|off`` the C kernels);
``ANIRENDER_EXECUTION=off`` skips the timing and runs the plain fp32 default;
``reuse_memory=off`` stops the shaders keeping freed CPU memory (``models.cpu_memory``).

Precision: ``fp32`` (the default; exact, also on a GPU, where torch would otherwise let
cuDNN convolve in TF32), ``fast`` (allows bf16 on a CPU with native bf16, TF32 or fp16 on
a GPU, taken only if it times faster), or a forced ``bf16`` / ``fp16`` / ``tf32``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ..errors import AniRenderError
from .cpu_memory import keep_freed_memory

log = logging.getLogger("anirender.execution")

ENV = "ANIRENDER_EXECUTION"
CACHE_ENV = "ANIRENDER_EXECUTION_CACHE"
PRECISIONS = ("fp32", "fast", "bf16", "fp16", "tf32")
#: precisions that change the weights' type (tf32 keeps fp32 weights, TF32 maths)
LOW_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: torch.compile is only timed when asked for on a CPU: on the 2-core benchmark machine
#: it compiled CoNR for over 7 minutes without finishing (BENCHMARKS.md)
COMPILE_ON_CPU_BY_DEFAULT = False
#: a way to run replaces the one kept so far only if it times this much faster: timings
#: on a shared machine wobble by a few per cent, and the default is the safe choice
MARGIN = 0.03
#: part of the on-disk key, raised when a remembered choice would mean something else
#: (2: ``winograd`` no longer covers the transposed convolutions; 3: ``native`` added; 4:
#: Winograd by C transforms, which changed what it wins)
CHOICES_VERSION = 4


@dataclass(frozen=True)
class Execution:
    """One way to run a shader. ``chunk`` 0 means all images of a call in one batch."""

    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = True
    batch: int = 1
    chunk: int = 0
    threads: int = 0
    winograd: bool = False
    winograd_transposed: bool = False
    native: bool = False
    compile: bool = False
    cuda_graphs: bool = False

    def describe(self) -> str:
        parts = [
            self.precision,
            "channels-last" if self.channels_last else "NCHW",
            f"{self.batch} frame{'s' if self.batch != 1 else ''} per call",
            f"{self.chunk} images per conv batch" if self.chunk else "all images in one batch",
        ]
        if self.device == "cpu":
            parts.append(f"{self.threads or torch.get_num_threads()} threads")
        if self.device == "cpu" and self.precision == "fp32":
            kinds = {"3x3": self.winograd, "transposed": self.winograd_transposed}
            kinds = [kind for kind, on in kinds.items() if on]
            if kinds:
                parts.append(f"Winograd ({' and '.join(kinds)})")
        if self.native:
            parts.append("C kernels")
        if self.compile:
            parts.append("torch.compile")
        if self.cuda_graphs:
            parts.append("CUDA graphs")
        return f"{self.device}: " + ", ".join(parts)


@dataclass(frozen=True)
class Request:
    """What the user asked for; None leaves a setting to the timing."""

    precision: str = "fp32"
    batch: int | None = None
    chunk: int | None = None
    layout: str | None = None
    threads: int | None = None
    winograd: bool | None = None
    winograd_transposed: bool | None = None
    native: bool | None = None
    compile: bool | None = None
    cuda_graphs: bool | None = None
    reuse_memory: bool | None = None  # None: on (``models.cpu_memory``)
    skip_timing: bool = False


def parse_request(
    precision: str | None = None,
    batch: int | None = None,
    threads: int | None = None,
    env: Mapping[str, str] | None = None,
) -> Request:
    """The user's request: command-line values win over ``ANIRENDER_EXECUTION``."""
    env = os.environ if env is None else env
    text = env.get(ENV, "").strip()
    values: dict[str, str] = {}
    skip = text.lower() in ("off", "default", "0")
    if text and not skip:
        for item in text.split(","):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            key, value = key.strip().lower(), value.strip().lower()
            if not sep or key not in _PARSERS:
                raise AniRenderError(
                    f"{ENV}={text!r}: '{item.strip()}' is not understood; use comma-separated "
                    f"key=value pairs with keys {', '.join(sorted(_PARSERS))}, "
                    'e.g. "precision=bf16,batch=1", or "off".'
                )
            values[key] = value
    if precision is not None:
        values["precision"] = precision
    if batch is not None:
        values["batch"] = str(batch)
    if threads is not None:
        values["threads"] = str(threads)
    parsed = {key: _PARSERS[key](key, value) for key, value in values.items()}
    if "winograd" in parsed:  # both kinds, unless the transposed ones are set apart
        parsed.setdefault("winograd_transposed", parsed["winograd"])
    return Request(**parsed, skip_timing=skip)


def _positive(key: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise AniRenderError(
            f"Execution setting {key}={value!r}: give a whole number of 1 or more."
        )
    return number


def _choice(options):
    def parse(key: str, value: str):
        if value not in options:
            raise AniRenderError(
                f"Execution setting {key}={value!r}: use one of {', '.join(options)}."
            )
        return value

    return parse


def _switch(key: str, value: str) -> bool:
    if value in ("1", "on", "yes", "true"):
        return True
    if value in ("0", "off", "no", "false"):
        return False
    raise AniRenderError(f"Execution setting {key}={value!r}: use on or off.")


_PARSERS: dict[str, Callable[[str, str], object]] = {
    "precision": _choice(PRECISIONS),
    "batch": _positive,
    "chunk": _positive,
    "layout": _choice(("channels_last", "nchw")),
    "threads": _positive,
    "winograd": _switch,
    "winograd_transposed": _switch,
    "native": _switch,
    "compile": _switch,
    "cuda_graphs": _switch,
    "reuse_memory": _switch,
}


# ------------------------------------------------------------------------ capabilities


def native_bf16() -> bool:
    """The CPU computes bf16 natively (AVX-512 BF16 or AMX), so bf16 can be faster."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def compiler_present() -> bool:
    """torch.compile on a CPU needs a C++ compiler."""
    return any(shutil.which(name) for name in ("c++", "g++", "clang++"))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> int | None:
    """Physical cores among the CPUs this process may use (None when unknown)."""
    try:
        allowed = os.sched_getaffinity(0)
        text = Path("/proc/cpuinfo").read_text()
    except (AttributeError, OSError):
        return None
    cores, cpu, package = set(), None, "0"
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            cpu, package = int(value), "0"
        elif key == "physical id":
            package = value
        elif key == "core id" and cpu in allowed:
            cores.add((package, value))
    return len(cores) or None


@contextmanager
def gpu_numerics(execution: Execution | None) -> Iterator[None]:
    """On a GPU, fp32 convolutions in IEEE fp32 unless the execution allows TF32.

    torch lets cuDNN convolve fp32 in TF32 (a 10-bit mantissa) by default; on CoNR that
    moves a frame up to 9e-3 from the exact one, while IEEE fp32 stays within 1.2e-5 of
    the reference loop on CPU or GPU (``bench/device_parity.py``, H200). ``fp32`` here
    means that exact answer; ``tf32`` (and reduced precisions) allow TF32. The switch is
    process-wide, so it is set for the call and put back after it."""
    if execution is None or execution.device != "cuda":
        yield
        return
    exact = execution.precision == "fp32"
    conv = getattr(torch.backends.cudnn, "conv", None)
    matmul = torch.backends.cuda.matmul
    if conv is None or not hasattr(conv, "fp32_precision"):  # torch before 2.9
        switches = [(torch.backends.cudnn, "allow_tf32"), (matmul, "allow_tf32")]
        want = not exact
    else:
        switches = [(conv, "fp32_precision"), (matmul, "fp32_precision")]
        want = "ieee" if exact else "tf32"
    before = [getattr(owner, name) for owner, name in switches]
    for owner, name in switches:
        setattr(owner, name, want)
    try:
        yield
    finally:
        for (owner, name), value in zip(switches, before, strict=True):
            setattr(owner, name, value)


_threads_before: int | None = None


def use_threads(execution: Execution) -> None:
    """Set torch's CPU threads as ``execution`` says; 0 puts back the count there was
    before any choice changed it."""
    global _threads_before
    if execution.device != "cpu":
        return
    if execution.threads:
        if _threads_before is None:
            _threads_before = torch.get_num_threads()
        torch.set_num_threads(execution.threads)
    elif _threads_before is not None:
        torch.set_num_threads(_threads_before)
        _threads_before = None


def plan(
    request: Request,
    device: str = "cpu",
    supports: tuple[str, ...] = ("bf16", "layout", "batch", "chunk"),
    images_per_frame: int = 1,
    max_batch: int = 2,
    bf16_native: bool | None = None,
    cores: int | None = None,
) -> tuple[Execution, list[tuple[str, tuple]]]:
    """The fp32 default (with what the user forced) and the settings worth timing.

    Each axis is ``(field, values)``, the default's value first; ``choose`` tries them
    one after the other, keeping the best so far (a handful of timings, not all
    combinations)."""
    device = torch.device(device).type
    base = Execution(device=device, threads=request.threads or 0)
    forced = {
        "precision": request.precision if request.precision in ("bf16", "fp16", "tf32") else None,
        "channels_last": None if request.layout is None else request.layout == "channels_last",
        "batch": request.batch,
        "chunk": request.chunk,
        "winograd": request.winograd if device == "cpu" else None,
        "winograd_transposed": request.winograd_transposed if device == "cpu" else None,
        "native": request.native if device == "cpu" else None,
        "compile": request.compile,
        "cuda_graphs": request.cuda_graphs,
    }
    base = replace(base, **{k: v for k, v in forced.items() if v is not None})
    if request.skip_timing:
        return base, []
    axes: list[tuple[str, tuple]] = []
    # precision first: the other settings are then timed in the precision that runs (the
    # C kernels gain 5-10 % of an fp32 frame and 25-35 % of a bf16 one on the Intel Xeon)
    if request.precision == "fast":
        if device == "cpu" and "bf16" in supports:
            if native_bf16() if bf16_native is None else bf16_native:
                axes.append(("precision", ("fp32", "bf16")))
        elif device == "cuda" and "fp16" in supports:
            axes.append(("precision", ("fp32", "tf32", "fp16")))
    # then what needs channels-last (the glue's C loops, then Winograd), before the layout
    # is timed against NCHW: timed after it, NCHW won by noise in bf16 (1.76 against 1.84
    # s), and the C loops, which NCHW block outputs cannot take, were never used (forced
    # beside it: channels-last with them 1.60-1.77 s a frame, NCHW 1.93-2.10). The C loops
    # first: Winograd's gain showed beside them (fp32 frames 2.23 -> 1.81 s) and was lost
    # in the noise without them
    if device == "cpu" and "native" in supports and request.native is None:
        axes.append(("native", (False, True)))
    if device == "cpu" and "winograd" in supports:
        # apart: on the AMD EPYC both kinds won, on the Intel Xeon only the 3x3 ones
        if request.winograd is None:
            axes.append(("winograd", (False, True)))
        if request.winograd_transposed is None:
            axes.append(("winograd_transposed", (False, True)))
    if "layout" in supports and request.layout is None:
        axes.append(("channels_last", (True, False)))
    if "batch" in supports and request.batch is None and max_batch > 1:
        axes.append(("batch", (1, max_batch)))
    if "chunk" in supports and request.chunk is None and images_per_frame > 1:
        axes.append(("chunk", (0, images_per_frame)))
    if device == "cpu" and request.threads is None:
        # one thread per physical core can beat torch's one per hyper-thread
        cores = physical_cores() if cores is None else cores
        if cores and cores < torch.get_num_threads():
            axes.append(("threads", (0, cores)))
    if device == "cuda" and request.cuda_graphs is None and "cuda_graphs" in supports:
        axes.append(("cuda_graphs", (False, True)))
    if request.compile is None and "compile" in supports:
        if device == "cuda" or (COMPILE_ON_CPU_BY_DEFAULT and compiler_present()):
            axes.append(("compile", (False, True)))
    return base, axes


def _normal(option: Execution, images_per_frame: int) -> Execution:
    """A chunk that covers a whole call is the same as no chunking; Winograd is only for
    fp32 on a CPU."""
    if option.chunk and option.chunk >= option.batch * images_per_frame:
        option = replace(option, chunk=0)
    if option.device != "cpu" or option.precision != "fp32":
        option = replace(option, winograd=False, winograd_transposed=False)
    if option.device != "cpu":
        option = replace(option, native=False)
    return option


# ------------------------------------------------------------------------------ timing


def cache_path() -> Path:
    """Where choices are remembered; ``ANIRENDER_EXECUTION_CACHE`` moves the file."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "anirender" / "execution.json"


def machine_key(*parts) -> str:
    """A key for the on-disk choice: this machine, this torch, and the job's shape."""
    text = json.dumps(
        [
            CHOICES_VERSION,
            cpu_name(),
            os.cpu_count(),
            torch.__version__,
            torch.get_num_threads(),
            *parts,
        ],
        default=str,
    )
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _read_cache() -> dict:
    try:
        data = json.loads(cache_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, execution: Execution) -> None:
    path = cache_path()
    data = _read_cache()
    data[key] = asdict(execution)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home only costs the timing next time
        log.info("could not remember the execution choice in %s: %s", path, exc)


def choose(
    name: str,
    base: Execution,
    axes: list[tuple[str, tuple]],
    apply: Callable[[Execution], None],
    run: Callable[[int], None],
    key: str | None = None,
    images_per_frame: int = 1,
) -> Execution:
    """Time ``run(frames)`` under ``base`` and its variations along ``axes`` (after
    ``apply``), keep the fastest per frame, apply it and return it.

    Nothing is timed when there is no axis or the choice is remembered under ``key``.
    """
    remembered = _read_cache().get(key) if key else None
    if remembered and axes:
        try:
            cached = Execution(**remembered)
        except TypeError:
            cached = None
        if cached is not None and cached.device == base.device:
            apply(cached)
            log.info("%s runs as %s (timed before on this machine)", name, cached.describe())
            return cached
    if not axes:
        apply(base)
        log.info("%s runs as %s (as asked, not timed)", name, base.describe())
        return base
    timings: dict[Execution, float] = {}

    def per_frame(option: Execution, again: bool = False) -> float:
        """Seconds per frame, the fastest run so far; ``again`` times it afresh now and
        returns that time alone (a run in a fast minute long ago proves nothing now), with
        as many runs as a candidate gets: one run against a candidate's best of two let
        candidates win by a burst of slowness (bf16 channels-last, 0.78 s a frame when
        first timed, lost to NCHW at 1.38 on one run of 1.43)."""
        option = _normal(option, images_per_frame)
        if option not in timings or again:
            apply(option)
            best, spent, runs = float("inf"), 0.0, 0
            # the first run also pays for allocations and conversions; small networks get
            # more runs (about a second's worth) so that a busy machine misleads less
            try:
                while runs < 2 or (spent < 1.0 and runs < 10):
                    start = time.perf_counter()
                    run(option.batch)
                    took = time.perf_counter() - start
                    best, spent, runs = min(best, took), spent + took, runs + 1
            except (RuntimeError, OSError) as exc:
                if option == _normal(base, images_per_frame):
                    raise  # the default itself fails: that is the job's error, not a choice's
                # a candidate this machine cannot run (a graph capture, a compiler) loses
                log.info("%s: %s failed and is not used: %s", name, option.describe(), exc)
                best = float("inf")
            now = best / option.batch
            timings[option] = min(timings.get(option, float("inf")), now)
            log.debug("%s: %.3f s per frame as %s", name, now, option.describe())
            return now
        return timings[option]

    best = base
    for field_name, values in axes:
        for value in values:
            option = replace(best, **{field_name: value})
            if _normal(option, images_per_frame) == _normal(best, images_per_frame):
                per_frame(best)
                continue
            candidate = per_frame(option)
            # the one kept so far runs again right after, and only that time counts: on a
            # machine whose speed drifts (other jobs, clocks), a candidate must not win
            # for running in a faster minute, nor lose to one run of the kept way in one
            if candidate < per_frame(best, again=True) * (1 - MARGIN):
                best = option
    best = _normal(best, images_per_frame)
    apply(best)
    log.info(
        "%s runs as %s: %.3f s per frame, %.2fx the fp32 default (%d ways timed)",
        name,
        best.describe(),
        timings[best],
        timings[_normal(base, images_per_frame)] / timings[best],
        len(timings),
    )
    if key:
        _write_cache(key, best)
    return best


class TunedShader:
    """Execution choice for the small convolutional shaders (guided, ANR).

    Reduced precision runs under ``torch.autocast``; the layout is the modules' memory
    format; ``batch`` is how many frames ``render`` runs through the network at once.
    Subclasses call ``tuned(...)`` at the start of ``render`` and wrap the network in
    ``with self.autocast():``.
    """

    request: Request | None = None
    execution: Execution | None = None

    def set_execution(self, execution: Execution):
        """Run ``render`` as ``execution`` says from now on; nothing is timed any more."""
        self._use_execution(execution)
        self._pinned = execution
        return self

    def _use_execution(self, execution: Execution):
        fmt = torch.channels_last if execution.channels_last else torch.contiguous_format
        self.to(memory_format=fmt)
        use_threads(execution)
        self.execution = execution
        return self

    @contextmanager
    def autocast(self) -> Iterator[None]:
        """Reduced precision as chosen: autocast for bf16/fp16, the GPU's TF32 switch."""
        execution = self.execution or Execution()
        dtype = LOW_DTYPES.get(execution.precision)
        with (
            gpu_numerics(execution),
            torch.autocast(execution.device, dtype=dtype, enabled=dtype is not None),
        ):
            yield

    @property
    def memory_format(self) -> torch.memory_format:
        """The inputs' layout: the chosen one, NCHW before a choice (training)."""
        cl = self.execution is not None and self.execution.channels_last
        return torch.channels_last if cl else torch.contiguous_format

    def tuned(self, name: str, shape: tuple, run: Callable[[int], None]) -> Execution:
        """The execution for inputs of ``shape``, timed with ``run(frames)`` the first time."""
        request = self.request if self.request is not None else parse_request()
        device = next(self.parameters()).device.type
        if device == "cpu":
            keep_freed_memory(request.reuse_memory)
        pinned = getattr(self, "_pinned", None)
        if pinned is not None:
            if pinned != self.execution:
                self._use_execution(pinned)
            return pinned
        chosen = getattr(self, "_tuned_for", {}).get(shape)
        if chosen is not None:
            if chosen != self.execution:
                self._use_execution(chosen)
            return chosen
        base, axes = plan(request, device, supports=("bf16", "fp16", "layout", "batch"))
        key = machine_key(name, getattr(self, "config", None), device, shape, request)
        chosen = choose(name, base, axes, self._use_execution, run, key=key)
        self._tuned_for = {**getattr(self, "_tuned_for", {}), shape: chosen}
        return chosen
