"""Set Up Shader Runtime: torch for the shader from the preferences, no terminal (#22).

These tests build a real runtime with Blender's Python (the bpy module's interpreter
here) from the package index as pip is configured on this machine, in the test's
temporary Blender user folder.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _pins(path: Path) -> dict:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def test_runtime_installs_the_versions_the_project_is_tested_with():
    from anirender.addon.runtime.builder import TORCH

    tested = _pins(REPO / "requirements.txt")
    runtime = _pins(REPO / "runtime_requirements.txt")
    assert runtime and all(tested.get(name) == version for name, version in runtime.items())
    name, version = TORCH.split("==")
    assert tested[name] == version


def test_broken_index_gives_the_artists_error_and_leaves_no_half_runtime(shader_addon, monkeypatch):
    import bpy

    from anirender.addon.runtime.location import runtime_dir, runtime_info

    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # none of the machine's indexes
    monkeypatch.setenv("PIP_INDEX_URL", "file:///nonexistent/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_RETRIES", "0")
    shader_addon.torch_build = "CPU"
    shader_addon.use_pytorch_index = False
    with pytest.raises(RuntimeError, match="Could not install torch.*Nothing was kept"):
        bpy.ops.anirender.setup_runtime()
    assert runtime_info() is None
    assert not runtime_dir().exists()
    assert not runtime_dir().with_name("runtime.partial").exists()


def test_setup_runtime_then_local_service_answers_with_it(shader_addon, capfd):
    import bpy

    from anirender.addon.runtime.location import runtime_info, runtime_python

    shader_addon.torch_build = "CPU"
    shader_addon.use_pytorch_index = False  # the machine's own index (a local CPU wheel)
    assert bpy.ops.anirender.setup_runtime() == {"FINISHED"}
    assert "Shader runtime ready" in capfd.readouterr().out
    info = runtime_info()
    assert info is not None and info["build"] == "cpu"
    python = runtime_python()
    checked = subprocess.run(
        [python, "-c", "import torch, anirender.models, anirender.cli; print(torch.__version__)"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        cwd="/",
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("2.13.0")

    # the Local Service uses the runtime with no path typed
    shader_addon.service_mode = "LOCAL"
    shader_addon.python_path = ""
    try:
        assert bpy.ops.anirender.start_local_service() == {"FINISHED"}
        assert bpy.ops.anirender.test_connection() == {"FINISHED"}
        from anirender.addon.shading.local_service import _local

        (service,) = _local.values()
        assert service.python == python and service.running
    finally:
        bpy.ops.anirender.stop_local_service()

    # a second run is a no-op
    made = info["made"]
    assert bpy.ops.anirender.setup_runtime() == {"FINISHED"}
    assert "already set up" in capfd.readouterr().out
    assert runtime_info()["made"] == made

    assert bpy.ops.anirender.remove_runtime() == {"FINISHED"}
    assert runtime_info() is None and runtime_python() == ""
