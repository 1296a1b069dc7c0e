"""``anirender train <model>``: the parsers of the trainers in ``models.train``.

anirender train conr --data DIR --out DIR       CoNR-architecture shader
anirender train anr --data CAPTURE... --out DIR ANR neural texture + renderer
anirender train reenact --data DIR --out DIR    pose-driven head reenactment
anirender train guided --data DIR... --out DIR  UDP-guided shader
"""

import json
from pathlib import Path

import torch

from ..errors import AniRenderError
from ..models.train import anr as anr_training
from ..models.train import conr as conr_training
from ..models.train import guided as guided_training
from ..models.train import reenact as reenact_training


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a network (conr, guided, reenact, anr)")
    sub = parser.add_subparsers(dest="model", metavar="MODEL")
    sub.required = True
    _add_conr(sub)
    _add_guided(sub)
    _add_reenact(sub)
    _add_anr(sub)


def _add_conr(subparsers) -> None:
    defaults = conr_training.TrainSettings(data=Path("."), out=Path("."))
    parser = subparsers.add_parser("conr", help="train a CoNR-architecture model")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder")
    parser.add_argument("--size", type=int, default=defaults.size)
    parser.add_argument("--views", type=int, default=defaults.views)
    parser.add_argument("--frames", type=int, default=defaults.frames, help="examples per step")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--width", type=float, default=defaults.width)
    parser.add_argument("--shader-channels", type=int, default=defaults.shader_channels)
    parser.add_argument("--flow-groups", type=int, default=defaults.flow_groups)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--threads", type=int, default=defaults.threads, help="CPU threads (0: torch's default)"
    )
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    parser.add_argument("--val-every", type=int, default=defaults.val_every)
    parser.add_argument("--resume", action="store_true", help="continue from --out")
    parser.add_argument(
        "--stop-after", type=int, help="end this run after N steps (resume later with --resume)"
    )
    parser.add_argument(
        "--init", type=Path, help="start from these CoNR weights (.safetensors) instead of random"
    )
    parser.add_argument(
        "--teach-steps",
        type=int,
        default=defaults.teach_steps,
        help="teacher forcing: shade with the true flows, less often until this step (0: off)",
    )
    parser.add_argument(
        "--flow-weight",
        type=float,
        default=defaults.weights["flow"],
        help="weight of the warp-guiding flow loss (0: the paper's losses only)",
    )
    parser.add_argument(
        "--visibility-weight",
        type=float,
        default=defaults.weights["visibility"],
        help="weight of the view-visibility loss (0: the paper's losses only)",
    )
    parser.set_defaults(func=_run_conr)


def _run_conr(args) -> int:
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = conr_training.TrainSettings(
        data=args.data,
        out=args.out,
        size=args.size,
        views=args.views,
        frames=args.frames,
        steps=args.steps,
        lr=args.lr,
        width=args.width,
        shader_channels=args.shader_channels,
        flow_groups=args.flow_groups,
        seed=args.seed,
        device=device,
        threads=args.threads,
        checkpoint_every=args.checkpoint_every,
        val_every=args.val_every,
        init=args.init,
        teach_steps=args.teach_steps,
    )
    settings.weights.update(flow=args.flow_weight, visibility=args.visibility_weight)
    if args.resume and (args.out / conr_training.STATE_FILE).is_file():
        saved = json.loads((args.out / conr_training.STATE_FILE).read_text())["settings"]
        for key in (
            "width",
            "shader_channels",
            "flow_groups",
            "size",
            "views",
            "seed",
            "weights",
            "teach_steps",
        ):
            setattr(settings, key, saved[key])
    state = conr_training.train(settings, resume=args.resume, stop_after=args.stop_after)
    val = state.get("validation")
    if val:
        m, b = val["model"], val["nearest_udp_baseline"]
        print(
            f"validation ({val['examples']} held-out examples): model PSNR {m['psnr']:.2f} dB, "
            f"SSIM {m['ssim']:.3f}, L1 {m['l1']:.4f} | nearest-UDP baseline PSNR "
            f"{b['psnr']:.2f} dB, SSIM {b['ssim']:.3f}, L1 {b['l1']:.4f}"
        )
    print(f"model: {args.out / conr_training.MODEL_FILE}")
    return 0


def _add_guided(subparsers) -> None:
    d = guided_training.TrainSettings(data=[], out=Path("."))
    parser = subparsers.add_parser(
        "guided", help="train the UDP-guided shader (sheets whose views carry their UDPs)"
    )
    parser.add_argument("--data", type=Path, nargs="+", required=True,
                        help="dataset folders from `anirender dataset conr`")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="folder for the weights")
    parser.add_argument("--size", type=int, default=d.size, help="working size")
    parser.add_argument("--views", type=int, default=d.views, help="sheet views per example")
    parser.add_argument("--characters", type=int, default=d.characters,
                        help="characters per step")  # fmt: skip
    parser.add_argument("--targets", type=int, default=d.targets,
                        help="targets per character and step")  # fmt: skip
    parser.add_argument("--crop", type=int, default=d.crop, help="training crop side")
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--threads", type=int, default=d.threads, help="CPU threads (0: all)")
    parser.add_argument("--minutes", type=float, default=d.minutes,
                        help="stop after this long (0: run all steps)")  # fmt: skip
    parser.set_defaults(func=_run_guided)


def _run_guided(args) -> int:
    settings = guided_training.TrainSettings(
        data=list(args.data), out=args.out, size=args.size, views=args.views,
        characters=args.characters, targets=args.targets, crop=args.crop, steps=args.steps,
        lr=args.lr, seed=args.seed, threads=args.threads, minutes=args.minutes,
    )  # fmt: skip
    state = guided_training.train(settings)
    val = state.get("validation")
    if val:
        s, c, m = val["shader"], val["copy"], val["median8"]
        print(
            f"validation ({val['examples']} held-out examples): guided PSNR {s['psnr']:.2f} dB, "
            f"SSIM {s['ssim']:.3f}, L1 {s['l1']:.4f} | copy {c['psnr']:.2f} dB | "
            f"median-of-8 {m['psnr']:.2f} dB"
        )
    print(
        f"model: {args.out / guided_training.MODEL_FILE} ({state['steps']} steps, "
        f"{state['seconds']:.0f} s, sha256 {state['sha256'][:12]})"
    )
    return 0


def _add_anr(subparsers) -> None:
    d = anr_training.TrainSettings(data=[], out=Path("."))
    parser = subparsers.add_parser(
        "anr", help="train an ANR neural texture and renderer on captured frames"
    )
    parser.add_argument("--data", type=Path, nargs="+", required=True,
                        help="capture folders, one per identity (they share the renderer)")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder")
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--batch", type=int, default=d.batch)
    parser.add_argument("--crop-width", type=int, default=d.crop_width,
                        help="train on crops this wide around the character (0: whole frames)")  # fmt: skip
    parser.add_argument("--lr-texture", type=float, default=d.lr_texture)
    parser.add_argument("--lr-renderer", type=float, default=d.lr_renderer)
    parser.add_argument("--channels", type=int, default=d.channels, help="texture channels")
    parser.add_argument("--texture-size", type=int, default=d.texture_size)
    parser.add_argument("--levels", type=int, default=d.levels, help="texture pyramid levels")
    parser.add_argument("--width", type=int, default=d.width, help="renderer U-Net width")
    parser.add_argument("--keyframes", type=int, default=d.keyframes,
                        help="keyframes per identity for --schedule split "
                        "(0: chosen by coverage)")  # fmt: skip
    parser.add_argument("--schedule", choices=anr_training.SCHEDULES, default=d.schedule,
                        help="joint: texture and renderer every step; split: the paper's "
                        "alternation (measured worse, see BENCHMARKS.md)")  # fmt: skip
    parser.add_argument("--hold-out", default="", help="frames to leave out, e.g. 5,15,25")
    parser.add_argument("--adversarial", action="store_true", help="add a PatchGAN loss")
    parser.add_argument("--adversarial-weight", type=float, default=d.adversarial_weight)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=d.threads, help="CPU threads")
    parser.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    parser.add_argument("--stop-at", type=int, default=0, help="pause after this step")
    parser.add_argument("--resume", action="store_true", help="continue from --out")
    parser.set_defaults(func=_run_anr)


def _run_anr(args) -> int:
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    hold_out = [int(f) for f in args.hold_out.split(",") if f.strip()]
    settings = anr_training.TrainSettings(
        data=list(args.data), out=args.out, steps=args.steps, batch=args.batch,
        crop_width=args.crop_width, lr_texture=args.lr_texture, lr_renderer=args.lr_renderer,
        channels=args.channels, texture_size=args.texture_size, levels=args.levels,
        width=args.width, keyframes=args.keyframes, schedule=args.schedule, hold_out=hold_out,
        adversarial=args.adversarial, adversarial_weight=args.adversarial_weight,
        seed=args.seed, device=device, threads=args.threads,
        checkpoint_every=args.checkpoint_every, stop_at=args.stop_at,
    )  # fmt: skip
    if args.resume and (args.out / anr_training.STATE_FILE).is_file():
        saved = json.loads((args.out / anr_training.STATE_FILE).read_text())["settings"]
        for key in ("channels", "texture_size", "levels", "features", "width", "depth", "seed"):
            setattr(settings, key, saved[key])
    state = anr_training.train(settings, resume=args.resume)
    for name, frames in state["keyframes"].items():
        print(f"keyframes of {name}: {', '.join(map(str, frames))}")
    print(
        f"model: {args.out / anr_training.MODEL_FILE} ({state['step']} steps, {state['seconds']:.0f} s)"
    )
    return 0


def _add_reenact(subparsers) -> None:
    parser = subparsers.add_parser(
        "reenact",
        help="pose-driven head reenactment (PIRenderer-style) on AnimeCeleb exports",
    )
    parser.add_argument("--data", type=Path, action="append",
                        help="dataset folder with combined_pose.csv (repeatable)")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument(
        "--portrait",
        type=Path,
        help="tune --init (default: shipped) to this one portrait instead of training "
        "on --data (self-supervised; a few minutes on a CPU)",
    )
    parser.add_argument("--size", type=int, default=64, help="image side the model works at")
    parser.add_argument("--base", type=int, default=32, help="channels at full resolution")
    parser.add_argument("--max-channels", type=int, default=256)
    parser.add_argument("--warp-layers", type=int, default=4)
    parser.add_argument("--flow-scale", type=int, default=4, help="flow at 1/N of the warp size")
    parser.add_argument("--res-blocks", type=int, default=2)
    parser.add_argument("--warp-size", type=int, default=0,
                        help="side the warping net sees (0: --size)")  # fmt: skip
    parser.add_argument("--edit-base", type=int, default=0,
                        help="editing-net channels at full size (0: --base)")  # fmt: skip
    parser.add_argument("--edit-max", type=int, default=0, help="editing-net channel cap")
    parser.add_argument("--edit-levels", type=int, default=0, help="editing-net downsamplings")
    parser.add_argument("--out-kernel", type=int, default=7)
    parser.add_argument("--change-weight", type=float, default=0.0,
                        help="weigh pixels by 1 + W * |target - source|")  # fmt: skip
    parser.add_argument("--region-weight", type=float, default=0.0,
                        help="weigh pixels in the eye and mouth boxes by 1 + W")  # fmt: skip
    parser.add_argument("--source-blend", action="store_true",
                        help="add an edit mask that keeps the untouched source (THA-style)")  # fmt: skip
    parser.add_argument("--edit-weight", type=float, default=0.0,
                        help="also train the edited image under the edit mask (weight W)")  # fmt: skip
    parser.add_argument("--mouth-weight", type=float, default=0.0,
                        help="add W * squared error on the mouth box (draws open mouths)")  # fmt: skip
    parser.add_argument("--mouth-gan", type=float, default=0.0,
                        help="add W * a patch critic's loss on the mouth (crisp open mouths)")  # fmt: skip
    parser.add_argument("--init", help="start from these weights (.safetensors or 'shipped')")
    parser.add_argument("--cosine", action="store_true",
                        help="cosine learning-rate decay to a tenth over --steps or --minutes")  # fmt: skip
    parser.add_argument(
        "--plain-output", action="store_true", help="tanh(conv) output as PIRenderer"
    )
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, help="pairs per step (16; 4 with --portrait)")
    parser.add_argument("--lr", type=float, help="learning rate (5e-4; 5e-5 with --portrait)")
    parser.add_argument("--warp-weight", type=float, default=0.5)
    parser.add_argument("--feature-weight", type=float, default=0.0)
    parser.add_argument("--val-characters", type=int, default=1)
    parser.add_argument("--val-poses", type=float, default=0.1)
    parser.add_argument("--minutes", type=float, default=0.0, help="stop after this long")
    parser.add_argument("--checkpoint-every", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.set_defaults(func=_run_reenact)


def _run_reenact(args) -> int:
    if args.portrait is not None:
        args.lr = reenact_training.TUNE_LR if args.lr is None else args.lr
        args.batch = 4 if args.batch is None else args.batch
        reenact_training.finetune_portrait(args)
        return 0
    if not args.data:
        raise AniRenderError("Give --data DIR (a dataset) or --portrait IMAGE (to tune).")
    args.lr = 5e-4 if args.lr is None else args.lr
    args.batch = 16 if args.batch is None else args.batch
    reenact_training.train_reenact(args)
    return 0
