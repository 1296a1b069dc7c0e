"""The weights store: released CoNR checkpoints converted once to safetensors + sha256.

``anirender weights import-conr FOLDER`` reads the four released ``.pth`` files (the only
place a pickle-based file is read, through ``torch.load(weights_only=True)``), checks
them strictly against the network and writes ``NAME.safetensors`` with a ``NAME.json``
manifest (sha256, config, sources) into the user's weights folder:
``$ANIRENDER_WEIGHTS`` or the platform's user data folder + ``anirender/weights``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

from ..errors import AniRenderError
from .conr.config import OFFICIAL_FILES

SUFFIX = ".safetensors"
DEFAULT_NAME = "conr"
#: the small CoNR-architecture model trained by this project (see BENCHMARKS.md)
SHIPPED_CONR = Path(__file__).resolve().parents[1] / "assets" / "conr_toon.safetensors"


def user_weights_dir() -> Path:
    """Where named weights live (created on demand)."""
    env = os.environ.get("ANIRENDER_WEIGHTS")
    if env:
        return Path(env).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or os.environ.get("APPDATA") or home)
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / "anirender" / "weights"


def sha256_file(path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------- reading and writing


# ------------------------------------------------------------------------ the store


def import_conr(folder, name: str = DEFAULT_NAME, store=None) -> Path:
    """Convert the released checkpoints in ``folder`` into ``store/NAME.safetensors``."""
    # torch: loaded only to build the network
    from .conr.model import CoNR

    if not name or any(c in name for c in "/\\:") or name.startswith("."):
        raise AniRenderError(f"'{name}' is not a usable weights name (letters, digits, -_.).")
    model = CoNR.from_official(folder)  # validates every key and shape
    store = Path(store) if store else user_weights_dir()
    target = store / f"{name}{SUFFIX}"
    sources = {f: sha256_file(Path(folder) / f) for f in OFFICIAL_FILES.values()}
    model.save_safetensors(target, metadata={"source": "official CoNR checkpoints"})
    manifest = {
        "name": name,
        "model": "conr",
        "file": target.name,
        "sha256": sha256_file(target),
        "bytes": target.stat().st_size,
        "config": json.loads(model.config.to_json()),
        "sources": sources,
        "imported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (store / f"{name}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return target


def list_weights(store=None) -> list[dict]:
    """Manifests of the named weights in the store."""
    store = Path(store) if store else user_weights_dir()
    entries = []
    for manifest in sorted(store.glob("*.json")) if store.is_dir() else []:
        try:
            entry = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        entry["present"] = (store / entry.get("file", "")).is_file()
        entries.append(entry)
    return entries


def resolve_weights(name_or_path=None, store=None, verify: bool = True) -> Path:
    """A weights name from the store, a .safetensors path or an official .pth folder -> Path.

    Named weights are checked against their manifest's sha256 when ``verify``.
    """
    if not name_or_path:
        # no choice made: the imported official weights if there are any, else the
        # model shipped with AniRender
        store_dir = Path(store) if store else user_weights_dir()
        if not (store_dir / f"{DEFAULT_NAME}{SUFFIX}").is_file() and SHIPPED_CONR.is_file():
            return SHIPPED_CONR
    name_or_path = str(name_or_path or DEFAULT_NAME)
    path = Path(name_or_path).expanduser()
    if path.is_file() or path.is_dir():
        return path
    if any(sep in name_or_path for sep in "/\\") or path.suffix in (SUFFIX, ".pth"):
        raise AniRenderError(f"Weights file or folder not found: {path}")
    store = Path(store) if store else user_weights_dir()
    target = store / f"{name_or_path}{SUFFIX}"
    if not target.is_file():
        known = ", ".join(e["name"] for e in list_weights(store)) or "none"
        raise AniRenderError(
            f"No weights named '{name_or_path}' in {store} (known: {known}), and no such file. "
            "Import the released checkpoints with `anirender weights import-conr FOLDER`."
        )
    if verify:
        manifest = store / f"{name_or_path}.json"
        if manifest.is_file():
            expected = json.loads(manifest.read_text()).get("sha256")
            if expected and sha256_file(target) != expected:
                raise AniRenderError(
                    f"{target} does not match the sha256 in {manifest.name}; it is damaged or "
                    "was replaced. Import the weights again."
                )
    return target


def load_conr(name_or_path=None, device="cpu", store=None):
    """CoNR from a store name, a .safetensors file or a folder of the released .pth."""
    # torch: loaded only to build the network
    from .conr.model import CoNR

    path = resolve_weights(name_or_path, store=store)
    if path.is_dir():
        return CoNR.from_official(path, device=device)
    return CoNR.from_safetensors(path, device=device)


# ---------------------------------------------------------------------------- CLI
