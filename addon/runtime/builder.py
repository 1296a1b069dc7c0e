"""Building the shader runtime as a ``Job``: venv, torch, the service's packages, AniRender.

Everything happens in ``runtime.partial`` beside the finished runtime and is moved into
place only once the runtime has imported torch and ``anirender.models``; a failure or
Esc removes the partial folder, so there is never a half runtime. pip runs as a child
process (its output goes to the log file and its last line to the status bar) and uses
the package index exactly as pip is configured on the machine (pip.conf, ``PIP_*``
variables), plus PyTorch's own index for the chosen build when asked.

AniRender itself is installed from the extension's own files: they are copied into the
runtime, and a ``.pth`` file puts them on its path. A second setup with the same
extension files, torch build and Python is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import AniRenderError
from ..core.jobs import Job
from .location import MARKER, log_path, python_in, runtime_dir

#: the extension's root folder (this file is addon/runtime/builder.py)
SOURCE = Path(__file__).resolve().parents[2]
TORCH = "torch==2.13.0"
PYTORCH_INDEX = "https://download.pytorch.org/whl/{build}"
CUDA_TAG = "cu126"
#: free disk the install needs, in GB (CPU wheel ~1 GB installed, CUDA ~6 GB)
NEEDED_GB = {"cpu": 3.0, "cuda": 10.0}
_SKIP = {"__pycache__", ".git", ".venv", ".cache", "out", "tests", "bench", "dist", "build"}


def has_nvidia_gpu() -> bool:
    """An NVIDIA driver answers (``nvidia-smi`` lists a GPU)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return listed.returncode == 0 and "GPU" in listed.stdout


@dataclass
class RuntimePlan:
    build: str  # "cpu" or "cuda"
    use_pytorch_index: bool
    python: str = sys.executable  # Blender's own Python makes the venv
    target: Path = field(default_factory=runtime_dir)

    @property
    def partial(self) -> Path:
        return self.target.with_name(self.target.name + ".partial")

    def wanted(self) -> dict:
        """What a finished runtime must record to count as this setup."""
        return {
            "torch": TORCH,
            "build": self.build,
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "source": source_digest(),
        }


def plan_runtime(torch_build: str = "AUTO", use_pytorch_index: bool = True) -> RuntimePlan:
    build = torch_build.lower()
    if build == "auto":
        build = "cuda" if has_nvidia_gpu() else "cpu"
    if build not in NEEDED_GB:
        raise AniRenderError(f"Unknown torch build {torch_build!r}; choose CPU or CUDA.")
    return RuntimePlan(build, use_pytorch_index)


def source_digest() -> str:
    """A hash of the extension's Python files, runtime requirements and weights."""
    digest = hashlib.sha256()
    for path in sorted(_source_files()):
        digest.update(str(path.relative_to(SOURCE)).encode())
        digest.update(
            path.read_bytes() if path.suffix != ".safetensors" else b"%d" % path.stat().st_size
        )
    return digest.hexdigest()[:16]


def _source_files():
    for root, dirs, files in os.walk(SOURCE):
        dirs[:] = [d for d in dirs if d not in _SKIP and not d.startswith(".")]
        for name in files:
            if name.endswith((".py", ".txt", ".toml", ".safetensors", ".json")):
                yield Path(root) / name


def is_current(plan: RuntimePlan) -> bool:
    try:
        info = json.loads((plan.target / MARKER).read_text())
    except (OSError, ValueError):
        return False
    wanted = plan.wanted()
    return python_in(plan.target).is_file() and all(info.get(k) == v for k, v in wanted.items())


def runtime_job(plan: RuntimePlan) -> Job:
    return Job("Set Up Shader Runtime", lambda job: _steps(job, plan), total=6, max_pending=1)


def _steps(job: Job, plan: RuntimePlan):
    if is_current(plan):
        job.summary = f"The shader runtime is already set up ({plan.target}); nothing to do."
        return
    _check_disk(plan)
    log = log_path()
    log.parent.mkdir(parents=True, exist_ok=True)
    running: dict = {}
    shutil.rmtree(plan.partial, ignore_errors=True)
    finished = False
    try:
        with open(log, "w", encoding="utf-8") as log_file:
            venv = [plan.python, "-m", "venv", str(plan.partial)]
            job.submit(_run, job, running, log_file, venv, "the environment")
            yield "Making the environment"
            python = str(python_in(plan.partial))
            torch_args = [python, "-m", "pip", "install", "--no-input", TORCH]
            if plan.use_pytorch_index:
                tag = CUDA_TAG if plan.build == "cuda" else "cpu"
                torch_args += ["--extra-index-url", PYTORCH_INDEX.format(build=tag)]
            job.submit(_run, job, running, log_file, torch_args, f"torch ({plan.build})")
            yield f"Installing torch ({plan.build.upper()}; the largest download)"
            requirements = SOURCE / "runtime_requirements.txt"
            packages = [python, "-m", "pip", "install", "--no-input", "-r", str(requirements)]
            job.submit(_run, job, running, log_file, packages, "the shader service's packages")
            yield "Installing the shader service's packages"
            job.submit(_install_anirender, plan.partial, python)
            yield "Copying AniRender into the runtime"
            job.submit(_run, job, running, log_file, [python, "-c", _CHECK], "the check")
            yield "Checking the runtime imports torch and AniRender"
        info = dict(plan.wanted(), made=time.strftime("%Y-%m-%d %H:%M:%S"))
        (plan.partial / MARKER).write_text(json.dumps(info, indent=1))
        old = plan.target.with_name(plan.target.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if plan.target.exists():
            plan.target.rename(old)
        plan.partial.rename(plan.target)
        shutil.rmtree(old, ignore_errors=True)
        finished = True
        job.summary = f"Shader runtime ready in {plan.target} (torch {plan.build.upper()})"
    finally:
        process = running.get("process")
        if process is not None and process.poll() is None:
            process.kill()  # Esc: pip stops now
            process.wait()
        if not finished:
            shutil.rmtree(plan.partial, ignore_errors=True)


_CHECK = "import torch, anirender.models, anirender.service.app; print('torch', torch.__version__)"


def _check_disk(plan: RuntimePlan) -> None:
    folder = plan.target.parent
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free / 1e9
    needed = NEEDED_GB[plan.build]
    if free < needed:
        raise AniRenderError(
            f"Setting up the shader runtime needs about {needed:.0f} GB free in {folder}; "
            f"there is {free:.1f} GB. Free some space and try again."
        )


def _install_anirender(env: Path, python: str) -> None:
    """Copy the extension's files into the runtime and put them on its path."""
    site = env / "anirender-source"
    shutil.copytree(
        SOURCE,
        site / "anirender",
        ignore=shutil.ignore_patterns(*_SKIP, ".*", "*.pyc"),
    )
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # relative to site-packages (as .pth lines may be), so the path survives the move
    # of runtime.partial into place
    Path(purelib, "anirender-extension.pth").write_text(os.path.relpath(site, purelib) + "\n")


def _run(job: Job, running: dict, log_file, command: list, what: str) -> None:
    """Run one command (worker thread or main), its output into the log, its last line
    into the job's message; an artist's error when it fails."""
    log_file.write(f"\n$ {' '.join(command)}\n")
    log_file.flush()
    env = dict(os.environ, PYTHONUNBUFFERED="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)  # Blender's own paths must not leak into the runtime
    env.pop("PYTHONHOME", None)
    try:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
        )
    except OSError as exc:
        raise AniRenderError(f"Could not start {command[0]} for {what}: {exc}.") from None
    running["process"] = process
    tail: list[str] = []
    lock = threading.Lock()
    for line in process.stdout:
        log_file.write(line)
        line = line.strip()
        if line:
            with lock:
                tail = (tail + [line])[-30:]
            job.message = line[:120]
    process.wait()
    log_file.flush()
    if process.returncode != 0:
        raise AniRenderError(explain_failure(what, "\n".join(tail), log_path()))


def explain_failure(what: str, output: str, log: Path) -> str:
    """What went wrong installing ``what``, in an artist's words, from pip's last lines."""
    text = output.lower()
    if "no space left" in text:
        reason = "the disk is full. Free some space and try again"
    elif re.search(
        r"failed to establish a new connection|temporary failure in name resolution|"
        r"network is unreachable|connection refused|max retries exceeded|read timed out",
        text,
    ):
        reason = (
            "the package index cannot be reached (no network?). Connect to the internet, "
            "or point pip at a reachable index, and try again"
        )
    elif "no matching distribution" in text or "could not find a version" in text:
        reason = (
            "the package index has no matching package for this Python "
            f"({sys.version_info.major}.{sys.version_info.minor}). Check pip's index "
            "settings (pip.conf, PIP_INDEX_URL) or turn on Use PyTorch's Index"
        )
    elif "failed building wheel" in text or "error: subprocess-exited-with-error" in text:
        reason = "a package failed to build (a wheel is missing for this machine)"
    else:
        last = output.strip().splitlines()[-1] if output.strip() else "no output"
        reason = f"pip said: {last}"
    return f"Could not install {what}: {reason}. Nothing was kept. Full log: {log}"
