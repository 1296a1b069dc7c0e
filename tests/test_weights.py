"""Released-checkpoint import: strict loading, clear refusals, the safetensors store."""

import argparse
import json
import os

import pytest
import torch

from anirender.cli import weights as weights_cli
from anirender.errors import AniRenderError
from anirender.models import weights
from anirender.models.conr.config import OFFICIAL_FILES
from anirender.models.conr.model import CoNR


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """Seeded random full-size weights in the released four-file layout."""
    folder = tmp_path_factory.mktemp("conr-official")
    torch.manual_seed(0)
    model = CoNR()
    for name, filename in OFFICIAL_FILES.items():
        torch.save(getattr(model, name).state_dict(), folder / filename)
    return folder, model


def _variant(official_folder, tmp_path, replace: str) -> tuple:
    """A copy of the official folder (links) whose ``replace`` file can be rewritten."""
    folder = tmp_path / "variant"
    folder.mkdir()
    for filename in OFFICIAL_FILES.values():
        if filename != replace:
            os.symlink(official_folder / filename, folder / filename)
    return folder, folder / replace


def _same_weights(a: CoNR, b: CoNR) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _cli(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    weights_cli.add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_official_checkpoints_load_strictly(official):
    folder, model = official
    loaded = CoNR.from_official(folder)
    assert _same_weights(loaded, model)


def test_truncated_checkpoint_is_refused(official, tmp_path):
    folder, target = _variant(official[0], tmp_path, "shader.pth")
    data = (official[0] / "shader.pth").read_bytes()
    target.write_bytes(data[: len(data) // 3])
    with pytest.raises(AniRenderError, match=r"shader\.pth.*not a readable PyTorch checkpoint"):
        CoNR.from_official(folder)


def test_wrong_shape_names_key_and_file(official, tmp_path):
    folder, target = _variant(official[0], tmp_path, "rgbadecodernet.pth")
    state = official[1].rgbadecodernet.state_dict()
    state["bottleneck.r0.conv2.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(state, target)
    with pytest.raises(
        AniRenderError, match=r"rgbadecodernet\.pth.*'bottleneck\.r0\.conv2\.weight'"
    ):
        CoNR.from_official(folder)


def test_missing_key_and_missing_file_are_named(official, tmp_path):
    folder, target = _variant(official[0], tmp_path, "rgbadecodernet.pth")
    state = official[1].rgbadecodernet.state_dict()
    del state["conv_rgba.0.bias"]
    torch.save(state, target)
    with pytest.raises(AniRenderError, match=r"'conv_rgba\.0\.bias' is missing"):
        CoNR.from_official(folder)
    target.unlink()
    with pytest.raises(AniRenderError, match=r"lacks rgbadecodernet\.pth"):
        CoNR.from_official(folder)


class Payload:
    """Anything that is not a tensor: weights_only refuses to rebuild it."""


def test_pickled_objects_are_not_unpickled(official, tmp_path):
    folder, target = _variant(official[0], tmp_path, "rgbadecodernet.pth")
    torch.save({"x": Payload()}, target)
    with pytest.raises(AniRenderError, match="not a readable PyTorch checkpoint"):
        CoNR.from_official(folder)


def test_import_list_resolve(official, tmp_path, monkeypatch, capsys):
    store = tmp_path / "store"
    monkeypatch.setenv("ANIRENDER_WEIGHTS", str(store))
    assert weights.user_weights_dir() == store
    assert _cli(["weights", "import-conr", str(official[0]), "--name", "mine"]) == 0
    target = store / "mine.safetensors"
    manifest = json.loads((store / "mine.json").read_text())
    assert manifest["sha256"] == weights.sha256_file(target)
    assert set(manifest["sources"]) == set(OFFICIAL_FILES.values())
    assert not list(store.glob("*.part"))
    assert _cli(["weights", "list"]) == 0
    assert "mine" in capsys.readouterr().out

    assert weights.resolve_weights("mine") == target
    loaded = weights.load_conr("mine")
    assert _same_weights(loaded, official[1])

    with pytest.raises(AniRenderError, match="No weights named 'other'"):
        weights.resolve_weights("other")
    with open(target, "r+b") as f:  # damage one byte of the stored tensors
        f.seek(-10, 2)
        byte = f.read(1)
        f.seek(-10, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(AniRenderError, match="sha256"):
        weights.resolve_weights("mine")


def test_safetensors_of_another_kind_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"a": torch.zeros(2)}, str(path), metadata={"format": "something-else"})
    with pytest.raises(AniRenderError, match="not a CoNR weights file"):
        CoNR.from_safetensors(path)
    path.write_bytes(b"not safetensors at all")
    with pytest.raises(AniRenderError, match="not a readable safetensors"):
        CoNR.from_safetensors(path)


def test_resolve_accepts_paths(tmp_path):
    file = tmp_path / "w.safetensors"
    file.write_bytes(b"x")
    assert weights.resolve_weights(str(file)) == file
    assert weights.resolve_weights(str(tmp_path)) == tmp_path
