"""Test harness: real Blender through the ``bpy`` module.

``bpy`` can be imported once per process, so every Blender test shares it; the
``blender`` fixture gives each test a fresh factory scene and its own temporary
``BLENDER_USER_RESOURCES`` folder.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "out" / "test-artifacts"

# Blender reads the user resource folder from the environment; set it before bpy loads so
# the test run never touches the real user's configuration.
_SESSION_USER = tempfile.mkdtemp(prefix="anirender-user-")
os.environ["BLENDER_USER_RESOURCES"] = _SESSION_USER
os.environ.setdefault("ANIRENDER_CACHE", str(REPO / ".cache"))
# shaders run their plain fp32 default unless a test asks for the timed choice
# (tests/test_execution.py), and never remember choices in the user's cache
os.environ["ANIRENDER_EXECUTION"] = "off"
os.environ["ANIRENDER_EXECUTION_CACHE"] = str(Path(_SESSION_USER) / "execution.json")


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Folder for pictures a person should look at after the run (out/test-artifacts)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def blender(tmp_path, monkeypatch):
    """A fresh factory scene and a private BLENDER_USER_RESOURCES for one test."""
    import bpy

    user = tmp_path / "blender-user"
    user.mkdir()
    _switch_user_resources(bpy, str(user), monkeypatch.setenv)
    yield bpy
    _switch_user_resources(bpy, _SESSION_USER, os.environ.__setitem__)


def _switch_user_resources(bpy, folder, setenv):
    """Point Blender at another user folder and reload factory settings.

    Factory settings re-read the repository folders from the environment, but the
    ``bl_ext.<repo>`` module paths only follow through the hooks Blender runs when
    preferences change.
    """
    import addon_utils

    setenv("BLENDER_USER_RESOURCES", folder)
    bpy.ops.wm.read_factory_settings(use_empty=False)
    addon_utils._initialize_extension_repos_pre()
    addon_utils._initialize_extension_repos_post()


@pytest.fixture
def addon(blender):
    """The add-on registered from the source tree for one test."""
    import anirender

    anirender.register()
    try:
        yield anirender
    finally:
        anirender.unregister()


@pytest.fixture
def shader_addon(blender):
    """The add-on enabled through Blender (so it has preferences), disabled afterwards."""
    import addon_utils

    addon_utils.enable("anirender", default_set=True)
    try:
        yield blender.context.preferences.addons["anirender"].preferences
    finally:
        addon_utils.disable("anirender", default_set=True)


@pytest.fixture
def toy_character(blender):
    """The toy test character opened from the cache (addon/character_cache.py): its armature."""
    from anirender.addon.characters.cache import load_character

    return load_character("toy")


@pytest.fixture
def makehuman_character(blender):
    """The MakeHuman test character opened from the cache: its armature."""
    from anirender.addon.characters.cache import load_character

    return load_character("makehuman")


@pytest.fixture(scope="session")
def tiny_conr_weights(tmp_path_factory) -> Path:
    """A tiny CoNR (1/16 width) with seeded weights, as safetensors (tests/service_support)."""
    from service_support import make_tiny_weights

    return make_tiny_weights(tmp_path_factory.mktemp("weights") / "tiny-conr.safetensors")


@pytest.fixture(scope="session")
def shader_service(tiny_conr_weights):
    """A real ``anirender serve`` on 127.0.0.1 (tiny weights, 4 MiB request limit)."""
    from service_support import running_service

    with running_service(tiny_conr_weights, "--max-request-mb", "4") as service:
        yield service


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_USER, ignore_errors=True)
