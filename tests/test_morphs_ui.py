"""The pose operators and the dataset export through the registered add-on, on real scenes."""

import numpy as np
import pytest
from PIL import Image


def _select(bpy, obj):
    bpy.context.view_layer.objects.active = obj
    obj.select_set(True)


def test_pose_operators(addon, toy_character):
    import bpy

    from anirender.addon.pose import sliders as morphs

    _select(bpy, toy_character)
    assert bpy.ops.anirender.pose_setup() == {"FINISHED"}
    settings = toy_character.anirender.morphs
    assert {b.shape_key for b in settings.bindings} == {"まばたき", "あ", "怒り"}
    assert settings.head_bone == "head"

    assert bpy.ops.anirender.pose_random() == {"FINISHED"}
    first = morphs.get_pose(toy_character)
    assert settings.seed == 1 and any(first[17:])
    bpy.ops.anirender.pose_copy()
    from anirender.ops.pose import get_clipboard

    assert get_clipboard(bpy.context) == morphs.pose_to_text(first)

    bpy.context.scene.frame_set(5)
    assert bpy.ops.anirender.pose_keyframe() == {"FINISHED"}
    bag = (
        toy_character.animation_data.action.layers[0]
        .strips[0]
        .channelbag(toy_character.animation_data.action_slot)
    )
    keyed = {fc.data_path for fc in bag.fcurves}
    assert {morphs.prop_path(n) for n in morphs.POSE_NAMES} <= keyed

    bpy.ops.anirender.pose_reset()
    assert morphs.get_pose(toy_character) == [0.0] * 20
    bpy.ops.anirender.pose_paste()
    assert morphs.get_pose(toy_character) == pytest.approx(first, abs=1e-5)

    # edit a binding: mouth_a now drives the wink instead of あ
    item = next(b for b in settings.bindings if b.target == "mouth_a")
    item.shape_key = "ウィンク"
    assert bpy.ops.anirender.pose_setup(detect=False) == {"FINISHED"}
    morphs.apply_pose(toy_character, [0.0] * 12 + [1.0] + [0.0] * 7)
    bpy.context.view_layer.update()
    keys = bpy.data.objects["Body"].data.shape_keys
    evaluated = keys.evaluated_get(bpy.context.evaluated_depsgraph_get())
    assert evaluated.key_blocks["ウィンク"].value == pytest.approx(1.0)
    assert evaluated.key_blocks["あ"].value == pytest.approx(0.0)


def test_render_shows_the_expression(toy_character, tmp_path, artifacts_dir):
    """A small Cycles render: eyes shut and mouth open change the face, not the rest."""
    import bpy

    from anirender.addon.characters.finding import find_character
    from anirender.addon.datasets.celeb import render_pose_image
    from anirender.addon.pose import sliders as morphs

    character = find_character(toy_character)
    pose = [0.0] * 20
    for name in ("eye_closed_l", "eye_closed_r", "mouth_a", "brow_angry_l", "brow_angry_r"):
        pose[morphs.POSE_NAMES.index(name)] = 1.0
    images = []
    for name, values in (("neutral", [0.0] * 20), ("expression", pose)):
        path = render_pose_image(
            bpy.context, character, values, tmp_path / f"{name}.png", resolution=96, samples=8
        )
        images.append(np.asarray(Image.open(path).convert("RGBA"), np.float32) / 255)
    neutral, expression = images
    Image.fromarray((np.concatenate([neutral, expression], 1) * 255).astype(np.uint8)).save(
        artifacts_dir / "morphs_expression.png"
    )
    diff = np.abs(neutral - expression)[..., :3].max(-1)
    # the face fills the middle of the head-framed image; the neck and shoulders are below
    face = diff[20:60, 28:68]
    shoulders = diff[76:, :]  # only sampling noise changes there
    assert face.mean() > 0.005 and (face > 0.05).sum() > 20
    assert face.mean() > 3 * shoulders.mean()


def test_dataset_export_rows_reproduce_renders(addon, toy_character, tmp_path):
    import bpy

    from anirender.addon.characters.finding import find_character
    from anirender.addon.core.guard import scene_snapshot
    from anirender.addon.datasets.celeb import read_pose_csv, render_pose_image
    from anirender.addon.pose import sliders as morphs

    before = scene_snapshot(bpy.context)
    out = tmp_path / "celeb"
    result = bpy.ops.anirender.export_celeb_dataset(
        directory=str(out), poses=2, styles={"FLAT", "TOON"}, resolution=64, samples=2, seed=3
    )
    assert result == {"FINISHED"}
    assert scene_snapshot(bpy.context) == before
    assert not morphs.is_rigged(toy_character)  # the export removed the rig it set up

    rows = read_pose_csv(out / "combined_pose.csv")
    assert len(rows) == 2 * (1 + 2 * 2)
    assert {r["cluster"] for r in rows} == {
        "frontal_flat", "rotated_flat", "frontal_toon", "rotated_toon"
    }  # fmt: skip
    for row in rows:
        image = Image.open(out / row["org_id"] / row["cluster"] / row["png_name"])
        assert image.size == (64, 64) and image.mode == "RGBA"
        if row["cluster"].startswith("frontal"):
            assert row["pose"][17:] == [0.0, 0.0, 0.0]
    rotated = [r for r in rows if r["cluster"] == "rotated_toon"]
    assert all(max(abs(v) for v in r["pose"][17:]) > 0 for r in rotated)
    for r in rotated:  # the head really turned in the render
        turned = np.asarray(Image.open(out / r["org_id"] / r["cluster"] / r["png_name"]))
        straight = np.asarray(Image.open(out / r["org_id"] / "frontal_toon" / r["png_name"]))
        assert np.abs(turned.astype(int) - straight.astype(int)).mean() > 2

    # render one row again from its CSV values: the same picture
    row = rotated[-1]
    again = render_pose_image(
        bpy.context,
        find_character(toy_character),
        row["pose"],
        tmp_path / "again.png",
        style="TOON",
        resolution=64,
        samples=2,
    )
    stored = np.asarray(Image.open(out / row["org_id"] / row["cluster"] / row["png_name"]))
    redone = np.asarray(Image.open(again))
    assert np.abs(stored.astype(int) - redone.astype(int)).mean() < 0.5
    # and it differs from another row's picture (the comparison can fail)
    other = np.asarray(Image.open(out / row["org_id"] / row["cluster"] / rotated[0]["png_name"]))
    assert np.abs(other.astype(int) - redone.astype(int)).mean() > 2


def test_dataset_cli_on_a_blend_file(blender, tmp_path):
    from anirender.addon.characters.cache import character_blend
    from anirender.addon.datasets.celeb import read_pose_csv
    from anirender.cli import main

    out = tmp_path / "cli"
    argv = ["dataset", "celeb", str(character_blend("toy")), "--out", str(out), "--poses", "1"]
    argv += ["--size", "32", "--styles", "flat", "--samples", "1", "--seed", "5"]
    assert main(argv) == 0
    rows = read_pose_csv(out / "combined_pose.csv")
    assert [(r["cluster"], r["png_name"]) for r in rows] == [
        ("frontal_flat", "00000.png"),
        ("frontal_flat", "00001.png"),
        ("rotated_flat", "00001.png"),
    ]
    assert main(argv) == 2  # the folder holds a dataset: refused without --overwrite
