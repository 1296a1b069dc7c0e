"""``anirender demo``: the main job, end to end on the MakeHuman character (``addon.demo``)."""

from __future__ import annotations

from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="shade the MakeHuman walk end to end")
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")
    parser.add_argument("--frames", type=int, default=48, help="walk frames to shade")
    parser.add_argument("--size", type=int, default=256, help="frame size in pixels")
    parser.add_argument("--weights", default=None, help="CoNR weights (default: shipped)")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from ..addon.demo import run_demo  # bpy: loaded when the command runs, not for --help

    report = run_demo(args.out, frames=args.frames, size=args.size, weights=args.weights)
    print(f"guided frames: {report['frames_dir']}")
    print(f"painted sheet: {report['painted_dir']}")
    print(f"movie:         {report['movie']}")
    print(f"contact sheet: {report['contact_sheet']}")
    print(f"scores:        {report['scores_file']}")
    scores = report["scores"]
    print(f"against the Cycles frames, {report['count']} frames at {args.size} px, on white:")
    for name, label in (
        ("guided", "guided shader (sheet UDPs)"),
        ("conr", f"CoNR image-only ({scores['conr_working_size']} px)"),
        ("copy", "copy, nearest UDP"),
    ):
        s = scores[name]
        print(
            f"  {label:<28} PSNR {s['psnr']:6.2f} dB  SSIM {s['ssim']:.3f}  "
            f"L1 {s['l1']:.4f}  flicker {s['flicker']:.4f}"
        )
    print(f"time: {report['seconds']:.1f} s")
    return 0
