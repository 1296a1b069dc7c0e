"""The reenactment net: shipped weights vs warp-only on an unseen character, loaders, CLI."""

import json
import time

import numpy as np
import pytest
import torch

from anirender.errors import AniRenderError
from anirender.models import reenact
from anirender.models.reenact import FaceGenerator, ReenactConfig


@pytest.fixture(scope="module")
def held_out_dataset(tmp_path_factory):
    """A character the shipped model never saw (new colours), exported like the training data.

    Rendered once for the module in a scratch scene (later tests reset the scene anyway).
    """
    import bpy

    from anirender.addon.core.guard import SceneGuard
    from anirender.addon.datasets.celeb import build_toy_cast, export_celeb_dataset

    bpy.ops.wm.read_factory_settings(use_empty=True)
    build_toy_cast(bpy.context.scene, 1, seed=2024)
    out = tmp_path_factory.mktemp("reenact") / "held_out"
    with SceneGuard(bpy.context):
        export_celeb_dataset(
            bpy.context,
            out,
            poses=8,
            styles=("TOON",),
            seed=77,
            resolution=128,
            samples=4,
            framing=1.8,
            frame_centre=0.5,  # as the shipped model's training data
        ).run_to_end()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return out


def test_shipped_model_is_small_and_described():
    path = reenact.SHIPPED_WEIGHTS
    assert path.stat().st_size <= 25 * 1024 * 1024
    meta = reenact.read_metadata(path)
    cfg = ReenactConfig.from_json(meta["config"])
    assert meta["format"] == reenact.FORMAT and cfg.pose_size == 20
    model = reenact.load_reenact()
    assert model.cfg == cfg


def test_legacy_64px_model_beats_warp_only_on_an_unseen_toy(held_out_dataset, artifacts_dir):
    """The first shipped model (64 px, toy cast) still loads and keeps its margin."""
    from anirender.models.train.reenact import evaluate, load_pairs

    model = reenact.load_reenact(reenact.LEGACY_64_WEIGHTS)
    pairs, _, _ = load_pairs([held_out_dataset], model.cfg.image_size, 0, 0.0)
    assert len(pairs) == 16
    metrics = evaluate(model, pairs)
    (artifacts_dir / "reenact_held_out.json").write_text(json.dumps(metrics, indent=2))
    assert metrics["full"]["l1"] < metrics["warp_only"]["l1"]
    assert metrics["full"]["l1"] < metrics["identity"]["l1"]
    # a picture: source, target, warp-only, full (rotated rows)
    with torch.no_grad():
        out = model(pairs.source_images(slice(8)), pairs.poses[:8])
    rows = [
        pairs.source_images(slice(8)),
        pairs.target_images(slice(8)),
        out["warp_image"],
        out["fake_image"],
    ]
    grid = torch.cat([torch.cat(list(r), -1) for r in rows], -2)
    from PIL import Image

    array = ((grid.clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).byte().numpy()
    Image.fromarray(array).save(artifacts_dir / "reenact_held_out.png")


def test_train_cli_runs_and_resumes(held_out_dataset, tmp_path):
    import argparse

    from safetensors import safe_open

    from anirender.cli import train as train_cli

    parser = argparse.ArgumentParser()
    train_cli.add_parser(parser.add_subparsers())
    common = ["train", "reenact", "--data", str(held_out_dataset), "--out", str(tmp_path / "run")]
    common += ["--size", "32", "--base", "8", "--batch", "2", "--val-characters", "0"]
    common += ["--val-poses", "0.25", "--checkpoint-every", "1", "--threads", "1"]
    args = parser.parse_args(common + ["--steps", "2"])
    assert args.func(args) == 0
    ckpt = tmp_path / "run" / "checkpoint.safetensors"
    with safe_open(str(ckpt), framework="pt") as handle:
        assert handle.metadata()["step"] == "2"
        first = handle.get_tensor("model.mapping_net.first.weight")
    args = parser.parse_args(common + ["--steps", "3", "--resume"])
    assert args.func(args) == 0
    with safe_open(str(ckpt), framework="pt") as handle:
        assert handle.metadata()["step"] == "3"
        assert not torch.equal(first, handle.get_tensor("model.mapping_net.first.weight"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["held_out_poses"]["count"] > 0
    small = reenact.load_reenact(tmp_path / "run" / "reenact.safetensors")
    assert small.cfg.image_size == 32


def test_released_checkpoint_loader_maps_keys_and_pose_order(tmp_path):
    torch.manual_seed(0)
    cfg = ReenactConfig(image_size=32, base=8, max_channels=32)
    foreign = FaceGenerator(cfg).eval()
    for p in foreign.parameters():  # make every weight matter
        p.data.add_(torch.randn_like(p) * 0.05)
    state = {f"net_G_ema.{k}": v for k, v in foreign.state_dict().items()}
    state.update({f"net_D.{k}": v for k, v in foreign.state_dict().items()})  # ignored
    ckpt = tmp_path / "epoch=9.ckpt"
    torch.save({"state_dict": state, "epoch": 9}, ckpt)

    # the checkpoint's inputs: our eyes/brows with sides swapped, mouth reversed
    order = [i ^ 1 for i in range(12)] + [16, 15, 14, 13, 12, 17, 18, 19]
    loaded = reenact.load_released_checkpoint(ckpt, cfg=cfg, pose_order=order)
    ours = torch.rand(3, 20)
    ours[:, 17:] = ours[:, 17:] * 40 - 20
    source = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = foreign(source, ours[:, order])["fake_image"]
        got = loaded(source, ours)["fake_image"]
        unpermuted = reenact.load_released_checkpoint(ckpt, cfg=cfg)(source, ours)["fake_image"]
    torch.testing.assert_close(got, expected, atol=5e-4, rtol=1e-3)
    assert (unpermuted - expected).abs().max() > 2e-2

    # PIRenderer's own .pt layout: {"net_G": state dict, "net_G_ema": state dict, ...}
    pth = tmp_path / "epoch_00190_iteration_000400000_checkpoint.pt"
    torch.save({"net_G": foreign.state_dict(), "net_G_ema": foreign.state_dict()}, pth)
    with torch.no_grad():
        same = reenact.load_released_checkpoint(pth, cfg=cfg)(source, ours)["fake_image"]
        torch.testing.assert_close(same, foreign(source, ours)["fake_image"])

    with pytest.raises(AniRenderError, match=r"matches \d+ of \d+ generator tensors"):
        reenact.load_released_checkpoint(ckpt, cfg=ReenactConfig(image_size=32, base=16))


class _Pickled:
    def __init__(self):
        self.weights = torch.zeros(2)


def test_checkpoints_that_need_pickled_classes_are_refused(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"net_G": _Pickled()}, path)
    with pytest.raises(AniRenderError, match="weights_only"):
        reenact.load_released_checkpoint(path)


def test_reenact_keeps_size_and_moves_alpha_with_the_head():
    portrait = np.zeros((96, 80, 4), np.uint8)
    portrait[20:70, 25:55] = (200, 120, 90, 255)
    straight = reenact.reenact(portrait, [0.0] * 20)
    turned = reenact.reenact(portrait, [0.0] * 17 + [20.0, 0.0, 20.0])
    assert straight.shape == turned.shape == (96, 80, 4) and straight.dtype == np.uint8
    assert np.abs(straight[..., 3].astype(int) - portrait[..., 3]).mean() < 20
    assert np.abs(straight.astype(int) - turned.astype(int)).mean() > 0.5
    with pytest.raises(AniRenderError, match="20"):
        reenact.reenact(portrait, [0.0] * 19)


def test_live_preview_is_debounced_and_shows_the_result(addon, toy_character):
    """Real worker thread + the main-thread tick: drags collapse into few inferences."""
    import bpy

    from anirender.addon.pose import sliders as morphs
    from anirender.addon.pose.preview import RESULT_IMAGE, PreviewSession

    image = bpy.data.images.new("Portrait", 64, 48, alpha=True)
    pixels = np.ones((48, 64, 4), np.float32)
    pixels[10:40, 20:44, :3] = (0.8, 0.5, 0.4)
    image.pixels.foreach_set(pixels.ravel())
    toy_character.anirender.morphs.portrait = image
    morphs.apply_pose(toy_character, [0.0] * 20)

    calls = []

    def counted(portrait, pose):
        calls.append(list(pose))
        return reenact.reenact(portrait, pose)

    session = PreviewSession(toy_character.name, reenact=counted, debounce=0.05)
    try:
        for step in range(30):  # a drag: the yaw slider moves every tick
            pose = [0.0] * 17 + [0.0, 0.0, float(step)]
            morphs.apply_pose(toy_character, pose)
            session.tick()
            time.sleep(0.005)
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline:
            session.tick()
            if session.idle and calls and calls[-1][19] == 29.0 and session.shown:
                break
            time.sleep(0.02)
    finally:
        session.stop()
    assert not session.errors
    assert calls[-1][19] == 29.0  # the last position is always rendered
    assert len(calls) < 10  # most intermediate positions were skipped
    result = bpy.data.images[RESULT_IMAGE]
    assert tuple(result.size) == (64, 48)

    # the one-shot operator goes through the add-on's choice of reenactor
    bpy.context.view_layer.objects.active = toy_character
    assert bpy.ops.anirender.reenact_preview() == {"FINISHED"}
    assert tuple(bpy.data.images[RESULT_IMAGE].size) == (64, 48)


def test_live_preview_toggle_starts_and_stops_a_session(addon, toy_character):
    import bpy

    from anirender.addon.pose import preview as reenact_preview

    settings = toy_character.anirender.morphs
    settings.portrait = bpy.data.images.new("Portrait", 32, 32, alpha=True)
    settings.live_preview = True
    session = reenact_preview._SESSIONS[toy_character.name]
    assert bpy.app.timers.is_registered(session.timer) and session._thread.is_alive()
    settings.live_preview = False
    assert toy_character.name not in reenact_preview._SESSIONS
    assert not session._thread.is_alive()
    assert not bpy.app.timers.is_registered(session.timer)


def test_full_size_generator_predicts_a_64_by_64_flow():
    torch.manual_seed(0)
    model = FaceGenerator(ReenactConfig()).eval()  # 256 x 256, as PIRenderer / AnimeCeleb
    assert model.mapping_net.first.in_features == 20
    assert model.mapping_net.first.out_features == 256 and model.mapping_net.layer == 3
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 256, 256), torch.zeros(1, 20))
    assert out["flow_field"].shape == (1, 2, 64, 64)
    assert out["warp_image"].shape == out["fake_image"].shape == (1, 3, 256, 256)
    assert out["fake_image"].abs().max() <= 1
