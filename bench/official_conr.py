"""The official CoNR code (github megvii-research/CoNR), loaded for side-by-side timing.

Whoever benchmarks fetches that repository; it is never part of this project. Its
encoders build torchvision ResNets, and torchvision's top-level package needs its
compiled ops, which a CPU-only torch from another build may lack. The ResNets are
plain Python, so ``torchvision.models`` is imported without running the top package.
"""

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch

OFFICIAL_PARTS = ("udpparsernet", "target_pose_encoder", "shader", "rgbadecodernet")


def _torchvision_models_only() -> None:
    if "torchvision" in sys.modules:
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        sys.exit(
            "bench --official needs torchvision's Python files: "
            ".venv/bin/python -m pip install --no-deps torchvision"
        )
    package = types.ModuleType("torchvision")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["torchvision"] = package


def load_official(source, state_dicts) -> torch.nn.Module:
    """The official CoNR from the checkout ``source`` with the given four state dicts."""
    source = Path(source).resolve()
    if not (source / "conr.py").is_file() or not (source / "model").is_dir():
        sys.exit(f"{source} is not a checkout of megvii-research/CoNR (no conr.py, model/)")
    _torchvision_models_only()
    sys.path.insert(0, str(source))
    try:
        from conr import CoNR as Official
    finally:
        sys.path.remove(str(source))
    args = types.SimpleNamespace(local_rank=1, distributed=False, test_pose_use_parser_udp=False)
    model = Official(args)
    for name in OFFICIAL_PARTS:
        getattr(model, name).load_state_dict(state_dicts[name], strict=True)
    model.eval()  # the official eval() sets its parts' modes and returns nothing
    return model


class OfficialShader:
    """Frames the way the official inference feeds them: one UDP per ``model_step``,
    the sheet parsed on the first call and kept (``parser_ckpt``)."""

    def __init__(self, model, sheet: np.ndarray):
        self.model = model
        # the official loader: premultiply in float and truncate to uint8
        rgb = (sheet[..., :3] * (sheet[..., 3:4] / 255.0)).clip(0, 255).astype(np.uint8)
        self.rgb = torch.from_numpy(rgb).permute(0, 3, 1, 2)[None]
        self.alpha = torch.from_numpy(sheet[..., 3:4].copy()).permute(0, 3, 1, 2)[None]
        model.reset_charactersheet()

    def render_frame(self, udp: np.ndarray) -> np.ndarray:
        mask = (udp[..., 3:4] * 255).clip(0, 255).astype(np.uint8)
        data = {
            "character_images": self.rgb.clone(),
            "character_masks": self.alpha.clone(),
            "pose_label": torch.from_numpy(udp).permute(2, 0, 1)[None].clone(),
            "pose_mask": torch.from_numpy(mask).permute(2, 0, 1)[None].clone(),
        }
        with torch.no_grad():
            out = self.model.model_step(self.model.data_norm_image(data), training=False)
        return out["shader"]["y_weighted_warp_decoded_rgba"][0].permute(1, 2, 0).cpu().numpy()
