"""``make demo`` end to end, shortened: the MakeHuman walk shaded three ways and scored,
and a second character shaded from a painted-over sheet."""

import json

import numpy as np
from PIL import Image


def test_demo_scores_three_shaders_and_shades_a_painted_sheet(blender, tmp_path, artifacts_dir):
    import torch

    from anirender.addon.demo import run_demo

    torch.set_num_threads(1)
    report = run_demo(tmp_path / "demo", frames=4, size=128)
    for folder in (report["frames_dir"], report["painted_dir"]):
        frames = sorted(folder.glob("frame_*.png"))
        assert [f.name for f in frames] == [f"frame_{i:04d}.png" for i in range(4)]
        for path in frames:
            rgba = np.asarray(Image.open(path))
            assert rgba.shape == (128, 128, 4)
            alpha = rgba[..., 3] > 127
            assert 0.03 < alpha.mean() < 0.6  # the character, not an empty or full frame
            assert rgba[..., :3][alpha].std() > 10  # shaded, not one flat colour
    assert report["movie"].is_file() and report["movie"].stat().st_size > 1000
    with report["movie"].open("rb") as movie:
        assert b"ftyp" in movie.read(64)  # an MP4 container
    sheet = np.asarray(Image.open(report["contact_sheet"]).convert("RGB"))
    assert sheet.shape[1] == 6 * 128 and sheet.std() > 20
    Image.fromarray(sheet).save(artifacts_dir / "demo_contact_sheet.png")

    scores = json.loads(report["scores_file"].read_text())
    assert scores == report["scores"]
    for shader in ("guided", "conr", "copy"):
        assert set(scores[shader]) == {"l1", "psnr", "ssim", "flicker"}
        assert 10 < scores[shader]["psnr"] < 60, (shader, scores[shader])
    guided, copy = scores["guided"], scores["copy"]
    # the main road beats copying sheet pixels by their UDP on every measure
    assert guided["psnr"] > copy["psnr"] + 1.0, scores
    assert guided["ssim"] > copy["ssim"] and guided["l1"] < copy["l1"], scores
    assert guided["flicker"] <= copy["flicker"], scores
    assert guided["psnr"] > scores["conr"]["psnr"], scores

    # the second character's frames carry the paint-over's ink: far more near-black
    # pixels inside the figure than its Cycles render of the same rig has
    painted = np.asarray(Image.open(report["painted_dir"] / "frame_0000.png")).astype(int)
    truth = tmp_path / "demo" / "painted" / "truth" / "frame_0000.png"
    cycles = np.asarray(Image.open(truth).convert("RGBA")).astype(int)

    def ink(rgba):
        inside = rgba[..., 3] > 200
        return (rgba[..., :3].max(-1)[inside] < 60).mean()

    assert ink(painted) > 2 * ink(cycles) + 0.01, (ink(painted), ink(cycles))
