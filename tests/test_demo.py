"""``make demo`` end to end, shortened: the MakeHuman walk shaded by the shipped model."""

import numpy as np
from PIL import Image


def test_demo_writes_frames_movie_and_contact_sheet(blender, tmp_path, artifacts_dir):
    import torch

    from anirender.addon.demo import run_demo

    torch.set_num_threads(1)
    report = run_demo(tmp_path / "demo", frames=4, size=128)
    frames = sorted(report["frames_dir"].glob("frame_*.png"))
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
    assert sheet.std() > 20
    Image.fromarray(sheet).save(artifacts_dir / "demo_contact_sheet.png")
    for key in ("psnr", "baseline_psnr", "baseline_working_psnr"):
        assert 10 < report[key] < 60, (key, report[key])
    assert report["working_size"] == 128 and report["count"] == 4
