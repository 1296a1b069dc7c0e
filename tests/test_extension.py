"""The extension builds, validates, installs in the bpy module and comes out cleanly."""

import subprocess
import sys
from pathlib import Path

import pytest

import anirender

REPO = Path(anirender.__file__).parent


def _extension_cli() -> Path:
    import bpy

    scripts = Path(bpy.utils.system_resource("SCRIPTS"))
    return scripts / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"


def _classes(package: str) -> list:
    """The classes of the ordered class list of the installed package."""
    import importlib

    return list(importlib.import_module(f"{package}.registration").CLASSES)


def _is_registered(bpy, cls) -> bool:
    if not getattr(cls, "is_registered", False):
        return False
    name = cls.__name__
    if "_OT_" in name:  # operators are reachable as bpy.ops.<category>.<name>
        category, op = name.split("_OT_")
        return hasattr(getattr(bpy.ops, category.lower()), op)
    if "_PT_" in name or "_MT_" in name or "_UL_" in name:
        return hasattr(bpy.types, name)
    return True


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ext")
    cli = str(_extension_cli())
    subprocess.run(
        [sys.executable, cli, "build", "--source-dir", str(REPO), "--output-dir", str(out)],
        check=True,
        capture_output=True,
    )
    (zip_path,) = out.glob("anirender-*.zip")
    result = subprocess.run(
        [sys.executable, cli, "validate", str(zip_path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return zip_path


def test_zip_leaves_out_tests_and_dev_files(extension_zip):
    import zipfile

    names = zipfile.ZipFile(extension_zip).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names
    assert not any(n.startswith(("tests/", "bench/", ".venv/", ".cache/")) for n in names)
    assert "Makefile" not in names and "pyproject.toml" not in names


def test_install_enable_disable_remove(blender, extension_zip, tmp_path):
    bpy = blender
    repos = [r.module for r in bpy.context.preferences.extensions.repos]
    assert "user_default" in repos
    result = bpy.ops.extensions.package_install_files(
        filepath=str(extension_zip), repo="user_default", enable_on_install=True
    )
    assert result == {"FINISHED"}
    module = "bl_ext.user_default.anirender"
    assert module in bpy.context.preferences.addons
    # installed into the temporary user folder, not the real user's
    user_root = Path(bpy.utils.resource_path("USER"))
    assert (user_root / "extensions" / "user_default" / "anirender").is_dir()
    classes = _classes(module)
    assert classes, "the class list is empty"
    missing = [c.__name__ for c in classes if not _is_registered(bpy, c)]
    assert not missing
    assert hasattr(bpy.types.Scene, "anirender") and hasattr(bpy.types.Object, "anirender")

    import addon_utils

    addon_utils.disable(module, default_set=True)
    assert module not in bpy.context.preferences.addons
    assert not [c.__name__ for c in classes if _is_registered(bpy, c)]
    assert not hasattr(bpy.types.Scene, "anirender")

    result = bpy.ops.extensions.package_uninstall(
        repo_index=repos.index("user_default"), pkg_id="anirender"
    )
    assert result == {"FINISHED"}
    assert not (user_root / "extensions" / "user_default" / "anirender").exists()


def test_register_unregister_twice_leaves_nothing(blender):
    bpy = blender
    classes = _classes("anirender")
    for _ in range(2):
        anirender.register()
        assert all(_is_registered(bpy, c) for c in classes)
        anirender.unregister()
        assert not any(_is_registered(bpy, c) for c in classes)
        assert not hasattr(bpy.types.Object, "anirender")


def test_models_import_without_blender():
    code = (
        "import sys, anirender.models, anirender.models.exr, anirender.cli\n"
        "assert 'bpy' not in sys.modules, 'bpy was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
