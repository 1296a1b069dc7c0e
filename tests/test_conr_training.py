"""The CoNR main job: dataset generator, trainer, and the shipped model."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "assets" / "conr_toon.safetensors"
TINY = {"width": 0.0625, "shader_channels": 16, "flow_groups": 4}


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    import bpy

    from anirender.addon.datasets.conr import DatasetSpec, generate_conr_dataset

    out = tmp_path_factory.mktemp("conr-data")
    spec = DatasetSpec(out_dir=out, characters=3, poses=4, size=128, seed=5, toy_every=3)
    manifest = generate_conr_dataset(spec)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return out, manifest


def test_dataset_writes_images_and_matching_udps(tiny_dataset, artifacts_dir):
    out, manifest = tiny_dataset
    saved = json.loads((out / "manifest.json").read_text())
    assert saved == json.loads(json.dumps(manifest))
    kinds = {c["kind"] for c in manifest["characters"]}
    assert kinds == {"makehuman", "toy"}
    splits = [c["split"] for c in manifest["characters"]]
    assert "train" in splits and "val" in splits
    row = []
    for character in manifest["characters"]:
        assert len(character["samples"]) == 4
        for sample in character["samples"]:
            image = np.asarray(Image.open(out / sample["image"]))
            udp = np.load(out / sample["udp"], allow_pickle=False)["i"]
            assert image.shape == (128, 128, 4) and image.dtype == np.uint8
            assert udp.shape == (128, 128, 4) and udp.dtype == np.float32
            alpha, occupied = image[..., 3] > 127, udp[..., 3] > 0.5
            iou = (alpha & occupied).sum() / max((alpha | occupied).sum(), 1)
            assert iou > 0.9, f"{sample['image']}: silhouettes differ (IoU {iou:.3f})"
            assert occupied.sum() > 200  # the character is in the frame
            xyz = udp[occupied][:, :3]
            assert xyz.min() >= 0 and xyz.max() <= 1 and xyz.std() > 0.02
            assert (udp[~occupied] == 0).all()
            row.append(np.concatenate([image[..., :3], (udp[..., :3] * 255).astype(np.uint8)]))
    Image.fromarray(np.concatenate(row, axis=1)).save(artifacts_dir / "conr_dataset_samples.png")


def test_dataset_is_reproducible(tiny_dataset, tmp_path):
    import bpy

    from anirender.addon.datasets.conr import DatasetSpec, generate_conr_dataset, plan_characters

    out, manifest = tiny_dataset
    spec = DatasetSpec(out_dir=tmp_path, characters=3, poses=4, size=128, seed=5, toy_every=3)
    assert [c.id for c in plan_characters(spec)] == [c["id"] for c in manifest["characters"]]
    # render the first character again: identical poses, cameras and UDPs
    spec.characters, spec.validation = 2, 0.5
    again = generate_conr_dataset(spec)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    first, repeat = manifest["characters"][0], again["characters"][0]
    assert first["seed"] == repeat["seed"] and first["body_shape"] == repeat["body_shape"]
    for a, b in zip(first["samples"], repeat["samples"], strict=True):
        assert a["pose"] == b["pose"] and a["camera"] == b["camera"]
        udp_a = np.load(out / a["udp"])["i"]
        udp_b = np.load(tmp_path / b["udp"])["i"]
        np.testing.assert_array_equal(udp_a, udp_b)


def _settings(data, out, steps, **extra):
    from anirender.models.train.conr import TrainSettings

    return TrainSettings(
        data=data,
        out=out,
        steps=steps,
        views=2,
        frames=1,
        lr=1e-3,
        checkpoint_every=2,
        val_every=0,
        val_examples=2,
        **TINY,
        **extra,
    )


def test_training_lowers_the_loss_and_resumes_exactly(tiny_dataset, tmp_path):
    import torch

    from anirender.models.conr.model import CoNR
    from anirender.models.train.conr import compute_losses, train
    from anirender.models.train.conr_data import draw_batch, load_split

    data, _ = tiny_dataset
    characters = load_split(data, "train", 128)
    batch = draw_batch(characters, 2, 2, np.random.default_rng(0))

    def loss_of(path):
        model = CoNR.from_safetensors(path)
        model.train()
        with torch.no_grad():
            return float(
                compute_losses(
                    model, batch, _settings(data, tmp_path, 1), torch.Generator().manual_seed(0)
                )["total"]
            )

    straight = tmp_path / "straight"
    train(_settings(data, straight, 2), show_progress=False)
    early = loss_of(straight / "conr.safetensors")
    train(_settings(data, straight, 8), resume=True, show_progress=False)
    late = loss_of(straight / "conr.safetensors")
    assert late < early

    # 4 steps in one go == 2 steps, stop, resume for 2 more
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    train(_settings(data, whole, 4), show_progress=False)
    train(_settings(data, halves, 4), show_progress=False, stop_after=2)
    train(_settings(data, halves, 4), resume=True, show_progress=False)
    a = CoNR.from_safetensors(whole / "conr.safetensors").state_dict()
    b = CoNR.from_safetensors(halves / "conr.safetensors").state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    log = [json.loads(line) for line in (halves / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]


def test_trainer_refuses_a_folder_that_is_not_a_dataset(tmp_path):
    from anirender.errors import AniRenderError
    from anirender.models.train.conr import train

    with pytest.raises(AniRenderError, match="not a CoNR dataset"):
        train(_settings(tmp_path, tmp_path / "out", 1), show_progress=False)


def test_sheet_correspondence_finds_each_target_point_in_the_views(tiny_dataset):
    import torch

    from anirender.models.conr.cinn import warp
    from anirender.models.train.conr_data import SEEN_TOLERANCE, load_split, sheet_correspondence

    data, _ = tiny_dataset
    character = load_split(data, "train", 128)[0]
    udps = character.udps
    target = udps[0]
    occupied = target[..., 3] > 0.5
    # the target itself as a view: every point is seen where it is, with no motion
    flow, seen = sheet_correspondence(udps[[0]], target)
    assert seen[0, 0][occupied].all() and not seen[0, 0][~occupied].any()
    # (framing enlarges samples, repeating UDP values: a tie may pick a neighbouring pixel)
    assert np.abs(flow).max() <= 2
    # other views: warping their true UDP by the flow lands on the target's UDP
    flow, seen = sheet_correspondence(udps[1:], target)
    sheet = torch.from_numpy(udps[1:]).permute(0, 3, 1, 2)
    warped = warp(sheet, torch.from_numpy(flow)).permute(0, 2, 3, 1).numpy()
    shown = seen[:, 0] > 0
    assert shown.any(1).any(1).all(), "every view should show part of the target"
    assert (shown.sum(0) > 0)[occupied].mean() > 0.7
    error = np.abs(warped[..., :3] - target[..., :3]).max(-1)
    assert np.median(error[shown]) < SEEN_TOLERANCE
    unwarped = np.abs(udps[1:, ..., :3] - target[..., :3]).max(-1)
    assert np.median(error[shown]) < 0.5 * np.median(unwarped[shown])


def test_warp_losses_reach_every_shader_level(tiny_dataset, tmp_path):
    import torch

    from anirender.models.conr.model import CoNR
    from anirender.models.train.conr import (
        compute_losses,
        new_model,
        teaching_probability,
        true_flow_steering,
        warp_losses,
    )
    from anirender.models.train.conr_data import draw_batch, load_split

    data, _ = tiny_dataset
    settings = _settings(data, tmp_path, 1)
    model = new_model(settings)
    batch = draw_batch(load_split(data, "train", 128), 1, 2, np.random.default_rng(1))
    out = model(batch.sheet, batch.target_udp)
    assert [f.shape[-1] for f in out["flows"]] == [8, 16, 32, 64, 128]
    assert [m.shape[1] for m in out["mask_logits"]] == [1] * 5
    flow, visibility = warp_losses(out, batch, "cpu")
    flow.backward()
    first_conv = model.shader.decoder_blocks[0].conv0[0].weight
    assert flow.item() > 0 and first_conv.grad.abs().sum() > 0
    # teacher forcing hands the true flows on wherever a view shows the point
    steer, handed = true_flow_steering(batch, "cpu"), []
    model(
        batch.sheet,
        batch.target_udp,
        steer_flow=lambda k, f: handed.append(steer(k, f)) or handed[-1],
    )
    shown = (batch.seen.flatten(0, 1) > 0).expand(-1, 2, -1, -1)
    true_flow = batch.flow.flatten(0, 1)
    np.testing.assert_allclose(handed[-1].detach()[shown], true_flow[shown], atol=1e-4)
    settings.teach_steps = 10
    assert [teaching_probability(settings, s) for s in (0, 5, 10, 20)] == [1.0, 0.5, 0.0, 0.0]
    # the paper's recipe alone: the guiding terms are not computed
    settings.weights.update(flow=0.0, visibility=0.0)
    losses = compute_losses(model, batch, settings, torch.Generator().manual_seed(0))
    assert "flow" not in losses and visibility.item() > 0
    # --init starts from given weights, whatever width the settings name
    model.save_safetensors(tmp_path / "start.safetensors")
    wider = _settings(data, tmp_path, 1, init=tmp_path / "start.safetensors")
    wider.width = 0.5
    again = new_model(wider)
    assert isinstance(again, CoNR) and again.config == model.config and wider.width == 0.0625
    for key, value in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("seed", [2027, 7])
def test_skirts_stay_around_the_hips(blender, seed):
    """A skirt fits the hips it hangs from (it once grew to the hands hanging beside it)."""
    import bpy

    from anirender.addon.characters.finding import meshes_deformed_by
    from anirender.addon.characters.looks import _vertex_regions, choose_outfit
    from anirender.addon.datasets.conr import DatasetSpec, build_character, plan_characters

    spec = DatasetSpec(out_dir=".", characters=8, seed=seed, toy_every=0)
    recipe = next(r for r in plan_characters(spec) if choose_outfit(r.seed).skirt)
    armature = build_character(recipe, bpy.context.scene)
    skirt = next(o for o in bpy.context.scene.objects if o.name.startswith("Skirt"))
    body = max(meshes_deformed_by(armature), key=lambda m: len(m.data.vertices))
    every = np.array([body.matrix_world @ v.co for v in body.data.vertices])
    at_hips = every[_vertex_regions(body) == "hips"]
    ring = np.array([skirt.matrix_world @ v.co for v in skirt.data.vertices])
    hip_width = np.ptp(at_hips[:, 0])
    assert np.ptp(ring[:, 0]) < 2.5 * hip_width  # a flared skirt, not a disc (was 7x)


def test_hair_sits_on_a_character_dressed_right_after_it_moved(blender):
    import bpy

    from anirender.addon.characters.looks import dress_character
    from anirender.addon.characters.toy import build_toy_character

    scene = bpy.context.scene
    toy = build_toy_character(scene, name="Moved")
    toy.location.x += 3.0  # no view-layer update between the move and the dressing
    before = {o.name for o in scene.objects}
    dress_character(toy, 5, scene)
    hair = next(o for o in scene.objects if o.name not in before and o.name.startswith("Hair"))
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = hair.evaluated_get(depsgraph)
    x = np.array([(evaluated.matrix_world @ v.co).x for v in evaluated.data.vertices])
    assert 2.5 < x.mean() < 3.5  # around the moved head, not where the toy was built


def _two_toys_and_a_floor():
    """The cached toy, a second toy beside it (posed by hand) and a floor plane."""
    import bpy

    from anirender.addon.characters.cache import load_character
    from anirender.addon.characters.toy import build_toy_character

    first = load_character("toy")
    scene = bpy.context.scene
    second = build_toy_character(scene, name="Second")
    second.location.x += 3.0
    bone = second.pose.bones[0]
    bone.rotation_mode = "XYZ"
    bone.rotation_euler = (0.1, 0.2, 0.3)
    bpy.ops.mesh.primitive_plane_add(size=20.0)
    scene.frame_set(scene.frame_current)  # the toys' actions have posed them
    return first, second, bpy.context.active_object


def test_operator_renders_the_scenes_characters_and_leaves_the_scene(addon, tmp_path):
    import bpy

    from anirender.addon.core.guard import scene_snapshot
    from anirender.models.train.conr_data import load_split

    first, second, floor = _two_toys_and_a_floor()
    before = scene_snapshot(bpy.context)
    pose_before = [tuple(pb.rotation_euler) for pb in second.pose.bones]
    out = tmp_path / "scene-data"
    result = bpy.ops.anirender.render_conr_dataset(
        directory=str(out), poses=4, resolution=64, samples=2, seed=1, turnaround=0.5
    )
    assert result == {"FINISHED"}
    assert scene_snapshot(bpy.context) == before
    assert [tuple(pb.rotation_euler) for pb in second.pose.bones] == pose_before
    assert not floor.hide_render

    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(c["name"] for c in manifest["characters"]) == sorted([first.name, second.name])
    assert sorted(c["split"] for c in manifest["characters"]) == ["train", "val"]
    poses = [s["pose"] for c in manifest["characters"] for s in c["samples"]]
    assert "turnaround" in poses and set(poses) - {"turnaround"}
    for character in manifest["characters"]:
        assert len(character["samples"]) == 4
        for sample in character["samples"]:
            alpha = np.asarray(Image.open(out / sample["image"]))[..., 3] > 127
            occupied = np.load(out / sample["udp"], allow_pickle=False)["i"][..., 3] > 0.5
            # the floor and the other toy stayed out of the picture
            iou = (alpha & occupied).sum() / max((alpha | occupied).sum(), 1)
            assert iou > 0.85, f"{sample['image']}: silhouettes differ (IoU {iou:.3f})"
    train, val = load_split(out, "train", 64), load_split(out, "val", 64)
    assert len(train) == len(val) == 1 and train[0].images.shape == (4, 64, 64, 4)


def test_operator_refuses_one_character_and_a_used_folder(addon, toy_character, tmp_path):
    import bpy

    from anirender.addon.core.guard import scene_snapshot

    before = scene_snapshot(bpy.context)
    with pytest.raises(RuntimeError, match="at least 2 rigged characters"):
        bpy.ops.anirender.render_conr_dataset(directory=str(tmp_path), poses=2, resolution=64)
    assert scene_snapshot(bpy.context) == before
    _two_toys_and_a_floor()
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(RuntimeError, match="already exists"):
        bpy.ops.anirender.render_conr_dataset(directory=str(tmp_path), poses=2, resolution=64)
