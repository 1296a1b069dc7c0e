"""CoNR: the neural shader that paints a character from its sheet into a UDP pose.

Four networks, with state-dict keys and shapes of the released checkpoints:

- ``udpparsernet``: ResNet-50 U-Net that reads a sheet image (RGB) into features and a
  UDP estimate (XYZV). It runs once per character sheet; ``encode_sheet`` caches it.
- ``target_pose_encoder``: ResNet-18 that reads the target UDP (4 channels).
- ``shader``: CINN, six blocks from H/32 to H that predict flows warping the sheet onto
  the pose, with messages passed between the sheet views.
- ``rgbadecodernet``: turns the last combined message into RGBA.

Unlike the reference code, which runs the shader one view at a time, every view of every
frame goes through each block in one batch, and the parts of a block's input that are the
same for all views of a frame (target features, view-combined flow/RGBA/messages) are
convolved once per frame. The sums are the same, only their order differs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AniRenderError

#: the four released checkpoint files and the sub-network each one holds
OFFICIAL_FILES = {
    "udpparsernet": "udpparsernet.pth",
    "target_pose_encoder": "target_pose_encoder.pth",
    "shader": "shader.pth",
    "rgbadecodernet": "rgbadecodernet.pth",
}
#: normalisation of sheet images and UDPs before the encoders (official)
INPUT_MEAN = 0.6
INPUT_STD = 0.2970
#: sheet images whose mean alpha reaches this have no usable transparency (official)
OPAQUE_MEAN_ALPHA = 0.95
#: sides must be a multiple of this (the shader halves the H/32 level twice)
SIZE_MULTIPLE = 128
SAFETENSORS_FORMAT = "anirender-conr"


@dataclass(frozen=True)
class CoNRConfig:
    """Shape of a CoNR network. The default is the released model.

    ``width`` scales every encoder/decoder channel count (messages follow the parser
    features), ``shader_channels`` is the hidden width of each CINN block and
    ``flow_groups`` the number of flows that warp each message (2 channels per flow).
    """

    width: float = 1.0
    shader_channels: int = 224
    flow_groups: int = 16

    def channels(self, n: int) -> int:
        return max(1, int(round(n * self.width)))

    @property
    def resnet_planes(self) -> tuple[int, int, int, int]:
        return tuple(self.channels(n) for n in (64, 128, 256, 512))

    @property
    def decoder_filters(self) -> tuple[int, ...]:
        return tuple(self.channels(n) for n in (512, 384, 256, 128, 32))

    @property
    def parser_features(self) -> list[int]:
        """Parser feature channels, deepest (H/32) first."""
        p = self.resnet_planes
        return [4 * p[3], 4 * p[2], 4 * p[1], 4 * p[0], p[0]]

    @property
    def pose_features(self) -> list[int]:
        p = self.resnet_planes
        return [p[3], p[2], p[1], p[0], p[0]]

    @property
    def messages(self) -> list[int]:
        return [*self.parser_features, self.resnet_planes[0]]

    @property
    def local_messages(self) -> list[int]:
        return [*self.parser_features, 0]

    def validate(self) -> None:
        if self.width <= 0 or self.shader_channels < 1 or self.flow_groups < 1:
            raise AniRenderError(f"Invalid CoNR configuration {self}.")
        for n in self.messages:
            if n % self.flow_groups:
                raise AniRenderError(
                    f"CoNR configuration {self}: message width {n} is not divisible by "
                    f"flow_groups={self.flow_groups}; choose a width or flow_groups that divide."
                )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CoNRConfig:
        return cls(**json.loads(text))


# ----------------------------------------------------------------------------- encoders


class FeatureNorm(nn.Module):
    """InstanceNorm wrapped as ``.norm`` (that is where the checkpoints keep it)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)

    def forward(self, x):
        # (group_norm with C groups is faster on channels-last tensors but its one-pass
        # variance drifts by ~1e-5, which the shader amplifies: keep instance_norm)
        return self.norm(x)


def _conv(cin, cout, k, stride=1, bias=False):
    return nn.Conv2d(cin, cout, k, stride, k // 2, bias=bias)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = _conv(cin, planes, 1)
        self.bn1 = FeatureNorm(planes)
        self.conv2 = _conv(planes, planes, 3, stride)
        self.bn2 = FeatureNorm(planes)
        self.conv3 = _conv(planes, cout, 1)
        self.bn3 = FeatureNorm(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(_conv(cin, cout, 1, stride), FeatureNorm(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = _conv(cin, planes, 3, stride)
        self.bn1 = FeatureNorm(planes)
        self.conv2 = _conv(planes, planes, 3)
        self.bn2 = FeatureNorm(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(_conv(cin, planes, 1, stride), FeatureNorm(planes))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


def _resnet_backbone(block, depths, planes, in_channels, stride_conv_pool) -> nn.Sequential:
    """torchvision ResNet body as one Sequential: 0 conv, 1 norm, 2 relu, 3 pool, 4-7 layers."""
    stem = planes[0]
    pool = _conv(stem, stem, 3, 2) if stride_conv_pool else nn.MaxPool2d(3, 2, 1)
    layers = [nn.Conv2d(in_channels, stem, 7, 2, 3, bias=False), FeatureNorm(stem), nn.ReLU()]
    layers.append(pool)
    cin = stem
    for i, (depth, p) in enumerate(zip(depths, planes, strict=True)):
        blocks = []
        for j in range(depth):
            blocks.append(block(cin, p, 2 if (i > 0 and j == 0) else 1))
            cin = p * block.expansion
        layers.append(nn.Sequential(*blocks))
    return nn.Sequential(*layers)


class UpBlock(nn.Module):
    """U-Net decoder step: ConvT(4,2,1) -> norm -> ReLU, concat skip, conv3x3 -> norm -> ReLU."""

    def __init__(self, cin: int, cout: int, skip: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False)
        self.bn1 = FeatureNorm(cout)
        self.conv2 = _conv(cout + skip, cout, 3)
        self.bn2 = FeatureNorm(cout)

    def forward(self, x, skip=None):
        x = F.relu(self.bn1(self.up(x)))
        if skip is not None:
            x = torch.cat([x, skip], 1)
        return F.relu(self.bn2(self.conv2(x)))


class ResNetUNet(nn.Module):
    """ResNet encoder with a U-Net decoder; features come deepest (H/32) first."""

    def __init__(self, backbone: nn.Sequential, skips, decoder_filters, out_channels: int):
        super().__init__()
        self.backbone = backbone
        deepest = backbone[7][-1]
        cin = (deepest.conv3 if hasattr(deepest, "conv3") else deepest.conv2).out_channels
        self.upsample_blocks = nn.ModuleList()
        for cout, skip in zip(decoder_filters, skips, strict=True):
            self.upsample_blocks.append(UpBlock(cin, cout, skip))
            cin = cout
        self.final_conv = nn.Conv2d(cin, out_channels, 1)

    def features(self, x) -> list[torch.Tensor]:
        b = self.backbone
        stem = b[2](b[1](b[0](x)))
        l1 = b[4](b[3](stem))
        l2 = b[5](l1)
        l3 = b[6](l2)
        l4 = b[7](l3)
        return [l4, l3, l2, l1, stem]

    def decode(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[0]
        skips = [*feats[1:], None]
        for block, skip in zip(self.upsample_blocks, skips, strict=True):
            x = block(x, skip)
        return self.final_conv(x)


def udp_parser_net(config: CoNRConfig) -> ResNetUNet:
    planes = config.resnet_planes
    backbone = _resnet_backbone(Bottleneck, (3, 4, 6, 3), planes, 3, stride_conv_pool=True)
    skips = config.parser_features[1:] + [0]
    return ResNetUNet(backbone, skips, config.decoder_filters, 4)


def target_pose_encoder_net(config: CoNRConfig) -> ResNetUNet:
    planes = config.resnet_planes
    backbone = _resnet_backbone(BasicBlock, (2, 2, 2, 2), planes, 4, stride_conv_pool=False)
    skips = config.pose_features[1:] + [0]
    return ResNetUNet(backbone, skips, config.decoder_filters, 1)


# ------------------------------------------------------------------------------ shader


def upsample2(x):
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def warp(image, flow, scale: float = 1.0):
    """Backward warp by ``flow * scale`` in pixels (x then y), border padding, corners aligned.

    ``flow`` may carry G flows (2G channels); the image's channels are then split into G
    equal groups, each warped by its own flow.
    """
    n, c, h, w = image.shape
    groups = flow.shape[1] // 2
    image = image.contiguous().view(n * groups, c // groups, h, w)
    flow = flow.contiguous().view(n * groups, 2, h, w).float()
    xs = torch.linspace(-1.0, 1.0, w, device=flow.device).view(1, 1, w)
    ys = torch.linspace(-1.0, 1.0, h, device=flow.device).view(1, h, 1)
    grid = torch.stack(
        [
            xs + flow[:, 0] * (scale / ((w - 1.0) / 2.0)),
            ys + flow[:, 1] * (scale / ((h - 1.0) / 2.0)),
        ],
        dim=-1,
    )
    out = F.grid_sample(
        image, grid.to(image.dtype), mode="bilinear", padding_mode="border", align_corners=True
    )
    return out.view(n, c, h, w)


def _conv_prelu(cin, cout, stride):
    return [nn.Conv2d(cin, cout, 3, stride, 1), nn.PReLU(cout)]


class ShaderBlock(nn.Module):
    """One CINN level: two stride-2 convs, residual conv stacks, two stride-2 ConvTs.

    The input, in checkpoint channel order, is: accumulated flow (2), target features,
    warped sheet RGBA (4), warped parser features, combined flow (2), combined RGBA (4),
    combined message, local message. The output splits into residual flow (2) | message |
    message flows | local message | local flows | mask logits (2 + message).
    """

    def __init__(self, cin, c, stacks, target, feature, msg_in, local_in, msg, local, groups):
        super().__init__()
        self.conv0 = nn.Sequential(*_conv_prelu(cin, c, 2), *_conv_prelu(c, c, 2))
        self.convblocks = nn.ModuleList(
            nn.Sequential(*[m for _ in range(6) for m in _conv_prelu(c, c, 1)])
            for _ in range(stacks)
        )
        flows = 2 * groups
        self.split = [2, msg, flows if msg else 0, local, flows if local else 0, 2 + msg]
        self.conv_last = nn.Sequential(
            nn.ConvTranspose2d(c, c, 4, 2, 1),
            nn.PReLU(c),
            nn.ConvTranspose2d(c, sum(self.split), 4, 2, 1),
        )
        # input channel ranges in checkpoint order: name -> (start, stop)
        sizes = [
            ("flow", 2),
            ("target", target),
            ("rgba", 4),
            ("feature", feature),
            ("mixed_flow", 2),
            ("mixed_rgba", 4),
            ("mixed_message", msg_in),
            ("local_message", local_in),
        ]
        self.ranges, start = {}, 0
        for name, size in sizes:
            self.ranges[name] = (start, start + size)
            start += size
        assert start == cin
        self._weight_cache = None

    def _weights(self, names: tuple[str, ...]) -> torch.Tensor:
        w = self.conv0[0].weight
        return torch.cat([w[:, slice(*self.ranges[n])] for n in names], 1)

    def first_conv(self, view_parts, frame_parts, views: int):
        """conv0[0] over the concatenation of per-view and per-frame inputs.

        ``view_parts``/``frame_parts`` map input names to tensors (None = zero, skipped).
        Per-view tensors have a batch of frames*views, or of views alone when they are the
        same for every frame; per-frame tensors a batch of frames (frame-major order).
        Returns (frames*views, c, h/2, w/2).
        """
        view_parts = {k: v for k, v in view_parts.items() if v is not None}
        frame_parts = {k: v for k, v in frame_parts.items() if v is not None}
        conv = self.conv0[0]
        key = (tuple(view_parts), tuple(frame_parts))
        w = conv.weight
        if torch.is_grad_enabled() and w.requires_grad:
            wv, wf = self._weights(key[0]), self._weights(key[1])
        else:
            stamp = (key, w.data_ptr(), w._version, w.dtype)
            cache = self._weight_cache
            if cache is None or cache[0] != stamp:
                fmt = (
                    torch.channels_last
                    if w.is_contiguous(memory_format=torch.channels_last)
                    else torch.contiguous_format
                )
                cache = (
                    stamp,
                    self._weights(key[0]).contiguous(memory_format=fmt),
                    self._weights(key[1]).contiguous(memory_format=fmt),
                )
                self._weight_cache = cache
            wv, wf = cache[1], cache[2]
        xv = torch.cat(list(view_parts.values()), 1).to(w.dtype)
        yv = F.conv2d(xv, wv, conv.bias, 2, 1)
        if not frame_parts:
            return yv
        xf = torch.cat(list(frame_parts.values()), 1).to(w.dtype)
        yf = F.conv2d(xf, wf, None, 2, 1)
        return (yv.unflatten(0, (-1, views)) + yf.unsqueeze(1)).flatten(0, 1)

    def forward(self, view_parts, frame_parts, views: int):
        x = self.first_conv(view_parts, frame_parts, views)
        x = self.conv0[1](x)
        x = self.conv0[3](self.conv0[2](x))
        for stack in self.convblocks:
            x = stack(x) + x
        return self.conv_last(x).float()


class CINN(nn.Module):
    """The six-level cross-view shader; holds only ``decoder_blocks`` (checkpoint keys)."""

    def __init__(self, config: CoNRConfig):
        super().__init__()
        self.config = config
        target = [*config.pose_features, 0]
        feature = [*config.parser_features, 0]
        msgs, locs = config.messages, config.local_messages
        msg_in, loc_in = [0, *msgs[:-1]], [0, *locs[:-1]]
        stacks = [1, 1, 1, 1, 1, 2]
        self.decoder_blocks = nn.ModuleList()
        for k in range(6):
            cin = 12 + target[k] + feature[k] + msg_in[k] + loc_in[k]
            self.decoder_blocks.append(
                ShaderBlock(
                    cin,
                    config.shader_channels,
                    stacks[k],
                    target[k],
                    feature[k],
                    msg_in[k],
                    loc_in[k],
                    msgs[k],
                    locs[k],
                    config.flow_groups,
                )
            )

    def forward(self, target_features, sheet_rgba, sheet_features, views: int, trace=None):
        """Shade frames from V sheet views; returns the last combined message (F, C, H, W).

        ``target_features``: 5 tensors (F, C, h, w), deepest first.
        ``sheet_rgba``: 6 tensors (S*V, 4, h, w), the sheet RGBA at each level's size;
        ``sheet_features``: 5 parser features (S*V, C, h, w). S is 1 (one sheet for all
        frames, inference) or F (a sheet per frame, training); order is frame-major.
        ``trace``: a dict that, when given, collects each level's accumulated sheet flow
        (``flows``, (F*V, 2, h, w) in that level's pixels) and the logit of its view weight
        (``mask_logits``, (F*V, 1, h, w), before the sigmoid and the softmax over views),
        H/16 ... H, for training.
        """
        frames = target_features[0].shape[0]
        shared = sheet_rgba[0].shape[0] == views and frames > 1

        def per_frame(x):  # (S*V, ...) -> (frames*V, ...)
            return x.repeat(frames, *([1] * (x.dim() - 1))) if shared else x

        def view_weights(mask):
            """mask * softmax_views(mask), as (numerator weights, per-frame denominator).

            The mask is a sigmoid in (0, 1), so exp needs no max subtraction.
            """
            e = torch.exp(mask)
            return (mask * e).unflatten(0, (frames, views)), e.unflatten(0, (frames, views)).sum(1)

        def mix(weights, values, channels):  # softmax-weighted sum over views
            num, den = weights
            v = values.unflatten(0, (frames, views))
            return (num[:, :, channels] * v).sum(1) / den[:, channels]

        state = {}
        last = len(self.decoder_blocks) - 1
        for k, block in enumerate(self.decoder_blocks):
            if k == 0:
                view = {
                    "rgba": sheet_rgba[0],
                    "feature": sheet_features[0],
                    "mixed_rgba": sheet_rgba[0],
                }
                frame = {"target": target_features[0]}
            else:
                view = {
                    "flow": state["flow"],
                    "rgba": state["rgba"],
                    "feature": state["feature"],
                    "local_message": state["local"],
                }
                frame = {
                    "target": target_features[k] if k < len(target_features) else None,
                    "mixed_flow": state["mixed_flow"],
                    "mixed_rgba": state["mixed_rgba"],
                    "mixed_message": state["mixed_message"],
                }
            # NCHW from here on: resampling and warping want it (one copy at this size)
            out = block(view, frame, views).contiguous()
            n_msg, n_msg_flow, n_loc, n_loc_flow, _ = block.split[1:]
            o_mask = 2 + n_msg + n_msg_flow + n_loc + n_loc_flow
            if k == last:  # only the combined message leaves the shader
                msg = warp(out[:, 2 : 2 + n_msg], out[:, 2 + n_msg : 2 + n_msg + n_msg_flow])
                weights = view_weights(torch.sigmoid(out[:, o_mask + 2 :]))
                return mix(weights, msg, slice(None))
            flow = out[:, :2] if k == 0 else out[:, :2] + state["flow"]
            # everything moves to the next level's resolution; flows scale with it
            flow = upsample2(flow) * 2.0
            messages = upsample2(out[:, 2:o_mask])  # message | flows | local | flows
            mask = upsample2(torch.sigmoid(out[:, o_mask:]))
            o = n_msg + n_msg_flow
            msg = warp(messages[:, :n_msg], messages[:, n_msg:o], scale=2.0)
            local = None
            if n_loc:
                local = warp(messages[:, o : o + n_loc], messages[:, o + n_loc :], scale=2.0)
            weights = view_weights(mask)
            if trace is not None:
                trace.setdefault("flows", []).append(flow)
                trace.setdefault("mask_logits", []).append(upsample2(out[:, o_mask : o_mask + 1]))
                if "steer_flow" in trace:  # training: replace the flow the next level uses
                    flow = trace["steer_flow"](k, flow)
            rgba = warp(per_frame(sheet_rgba[k + 1]), flow)
            feature = None
            if k + 1 < len(sheet_features):
                feature = warp(per_frame(sheet_features[k + 1]), flow)
            state = {
                "flow": flow,
                "rgba": rgba,
                "feature": feature,
                "local": local,
                "mixed_flow": mix(weights, flow, slice(0, 1)),
                "mixed_rgba": mix(weights, rgba, slice(0, 1)),
                "mixed_message": mix(weights, msg, slice(2, None)),
            }
        raise AssertionError("unreachable")


class RGBADecoder(nn.Module):
    """Last combined message -> RGBA in [0,1] (straight); keys ``conv_rgba``, ``bottleneck``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_rgba = nn.Sequential(nn.Conv2d(channels, 4, 3, 1, 1))
        self.bottleneck = nn.Sequential()
        self.bottleneck.add_module("r0", _DecoderResBlock(channels))

    def forward(self, x):
        return torch.sigmoid(self.conv_rgba(self.bottleneck(x)).float())


class _DecoderResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, 1, 1)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1)
        self.norm1 = nn.Conv2d(c, c, 1)  # a 1x1 conv, named "norm" in the checkpoints
        self.norm2 = nn.Conv2d(c, c, 1)

    def forward(self, x):
        y = self.conv1(F.relu(self.norm1(x)))
        y = self.conv2(F.relu(self.norm2(y)))
        return y + x


# ------------------------------------------------------------------------------- CoNR


@dataclass
class SheetEncoding:
    """A character sheet ready for shading: cached parser features and sheet RGBA.

    ``rgba`` holds the shader's view of the sheet (RGB premultiplied twice, as the
    reference does, and A) at each level's size, H/32 ... H; ``features`` the parser
    features, deepest first. Both have a batch of V views, fp32.
    """

    size: int
    views: int
    rgba: list[torch.Tensor]
    features: list[torch.Tensor]


def premultiply_official(images: np.ndarray) -> np.ndarray:
    """uint8 straight RGBA -> uint8 RGB premultiplied the reference way (truncated)."""
    alpha = images[..., 3:4] / 255.0
    return (images[..., :3] * alpha).clip(0, 255).astype(np.uint8)


def quantise_udp_mask(udp: np.ndarray) -> np.ndarray:
    """UDP with V quantised like the reference's uint8 round trip (truncated)."""
    out = np.array(udp, dtype=np.float32, copy=True)
    out[..., 3] = (udp[..., 3] * 255).clip(0, 255).astype(np.uint8) / np.float32(255.0)
    return out


def _check_size(h: int, w: int, what: str) -> None:
    if h != w or h % SIZE_MULTIPLE or h == 0:
        raise AniRenderError(
            f"{what} is {w}x{h}; CoNR needs square images whose side is a multiple of "
            f"{SIZE_MULTIPLE} (256 is what the weights were trained at). Crop and resize "
            "with anirender.models.framing first."
        )


class CoNR(nn.Module):
    """The whole CoNR model; its sub-modules hold the four released state dicts."""

    def __init__(self, config: CoNRConfig | None = None):
        super().__init__()
        self.config = config = config or CoNRConfig()
        config.validate()
        self.udpparsernet = udp_parser_net(config)
        self.target_pose_encoder = target_pose_encoder_net(config)
        self.shader = CINN(config)
        self.rgbadecodernet = RGBADecoder(config.messages[-1])
        #: most frames shaded together; fewer when frames * views * pixels would pass
        #: ``pixels_per_batch`` (memory grows with it: ~0.2 GB per 256x256 view in fp32)
        self.frames_per_batch = 8
        self.pixels_per_batch = 16 * 256 * 256

    # ----------------------------------------------------------------- loading, saving

    @classmethod
    def from_official(cls, folder, device="cpu") -> CoNR:
        """Load the four released .pth files (strict, ``weights_only``)."""
        from .weights import read_official_checkpoints

        parts = read_official_checkpoints(folder)
        model = cls()
        model.load_parts(parts, source=str(folder))
        return model.prepare(device)

    @classmethod
    def from_safetensors(cls, path, device="cpu") -> CoNR:
        from .weights import read_conr_safetensors

        config, parts = read_conr_safetensors(path)
        model = cls(config)
        model.load_parts(parts, source=str(path))
        return model.prepare(device)

    def save_safetensors(self, path, metadata: dict | None = None) -> None:
        from .weights import write_conr_safetensors

        write_conr_safetensors(self, path, metadata)

    def load_parts(self, parts: dict[str, dict[str, torch.Tensor]], source: str) -> None:
        """Load ``{sub-network: state dict}`` strictly, naming the first offending key."""
        for name, filename in OFFICIAL_FILES.items():
            where = f"{filename} in {source}"
            if name not in parts:
                raise AniRenderError(f"{where}: missing. All four CoNR parts are needed.")
            expected = getattr(self, name).state_dict()
            given = parts[name]
            for key, tensor in expected.items():
                if key not in given:
                    raise AniRenderError(
                        f"{where}: key '{key}' is missing; this is not a CoNR {name} "
                        "checkpoint of this configuration."
                    )
                if tuple(given[key].shape) != tuple(tensor.shape):
                    raise AniRenderError(
                        f"{where}: key '{key}' has shape {tuple(given[key].shape)}, expected "
                        f"{tuple(tensor.shape)}. The file belongs to another model or width."
                    )
                if not given[key].is_floating_point():
                    raise AniRenderError(f"{where}: key '{key}' is not a float tensor.")
            extra = sorted(set(given) - set(expected))
            if extra:
                raise AniRenderError(f"{where}: unexpected key '{extra[0]}'; wrong file?")
            getattr(self, name).load_state_dict(given, strict=True)

    def prepare(self, device="cpu", precision: str = "fp32") -> CoNR:
        """Move to ``device``, eval mode, channels-last convolutions, fp32 or bf16 convs."""
        try:
            device = torch.device(device)
            if device.type == "cuda" and not torch.cuda.is_available():
                raise RuntimeError("CUDA is not available")
        except RuntimeError as exc:
            raise AniRenderError(f"Cannot use device '{device}': {exc}. Try --device cpu.") from exc
        self.to(device).eval()
        self.set_precision(precision)
        return self

    def set_precision(self, precision: str) -> CoNR:
        """'fp32' or 'bf16' (convolutions in bfloat16; flows, warps and mixing stay fp32).

        Going back from bf16 to fp32 keeps the rounded weights: reload to get them back.
        """
        dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
        if precision not in dtypes:
            raise AniRenderError(f"Unknown precision '{precision}'; use one of {sorted(dtypes)}.")
        self.to(dtype=dtypes[precision], memory_format=torch.channels_last)
        return self

    @property
    def device(self) -> torch.device:
        return self.rgbadecodernet.conv_rgba[0].weight.device

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.rgbadecodernet.conv_rgba[0].weight.dtype

    # ------------------------------------------------------------- torch-level forwards

    def _as_input(self, x: torch.Tensor) -> torch.Tensor:
        return (
            ((x - INPUT_MEAN) / INPUT_STD)
            .to(self.compute_dtype)
            .contiguous(memory_format=torch.channels_last)
        )

    def parse_sheet(self, rgb: torch.Tensor, with_udp: bool = True):
        """Parser on (N, 3, H, W) premultiplied RGB in [0,1] -> (features, UDP or None).

        Features are fp32, deepest first; the UDP estimate is (N, 4, H, W) in [0,1].
        """
        feats = self.udpparsernet.features(self._as_input(rgb))
        udp = self.udpparsernet.decode(feats).float().clamp(0, 1) if with_udp else None
        return [f.float() for f in feats], udp

    def encode_pose(self, udp: torch.Tensor) -> list[torch.Tensor]:
        """Target encoder on (F, 4, H, W) UDP in [0,1] (XYZ, V); input is cat(XYZ*V, V)."""
        v = udp[:, 3:4]
        x = torch.cat([udp[:, :3] * v, v], 1)
        return self.target_pose_encoder.features(self._as_input(x))

    @staticmethod
    def sheet_rgba_pyramid(sheet: torch.Tensor) -> list[torch.Tensor]:
        """(N, 4, H, W) as loaded (RGB premultiplied, A) -> shader RGBA at H/32 ... H."""
        rgba = torch.cat([sheet[:, :3] * sheet[:, 3:4], sheet[:, 3:4]], 1).float()
        size = rgba.shape[-1]
        levels = [
            F.interpolate(rgba, size=(size >> s, size >> s), mode="bilinear")
            for s in (5, 4, 3, 2, 1)
        ]
        return [*levels, rgba]

    def shade(
        self, pose_features, sheet_rgba, sheet_features, views: int, trace=None
    ) -> torch.Tensor:
        """Shader + RGBA decoder -> (F, 4, H, W) premultiplied RGBA in [0,1]."""
        message = self.shader(pose_features, sheet_rgba, sheet_features, views, trace)
        x = message.to(self.compute_dtype).contiguous(memory_format=torch.channels_last)
        out = self.rgbadecodernet(x).contiguous()
        return torch.cat([out[:, :3] * out[:, 3:4], out[:, 3:4]], 1)

    def forward(self, sheet: torch.Tensor, target_udp: torch.Tensor, steer_flow=None) -> dict:
        """Full differentiable forward for training.

        ``sheet``: (F, V, 4, H, W) as the reference loads it (RGB premultiplied, A) in
        [0,1]; ``target_udp``: (F, 4, H, W). Returns ``rgba`` (F, 4, H, W) premultiplied and
        ``sheet_udp`` (F, V, 4, H, W), the parser's UDP estimate of the sheet views, and
        the shader's per-level ``flows`` and ``mask_logits`` (see ``CINN.forward``).
        Unlike the reference, target features are not detached, so the pose encoder trains.
        ``steer_flow(level, flow) -> flow``, when given, replaces the flow each shader level
        hands on (teacher forcing in training).
        """
        frames, views = sheet.shape[:2]
        flat = sheet.flatten(0, 1)
        feats, sheet_udp = self.parse_sheet(flat[:, :3], with_udp=True)
        trace = {} if steer_flow is None else {"steer_flow": steer_flow}
        pose = self.encode_pose(target_udp)
        rgba = self.shade(pose, self.sheet_rgba_pyramid(flat), feats, views, trace)
        trace.pop("steer_flow", None)
        return {"rgba": rgba, "sheet_udp": sheet_udp.unflatten(0, (frames, views)), **trace}

    # ------------------------------------------------------------------ numpy-level API

    def encode_sheet(self, images: np.ndarray, premultiplied: bool = False) -> SheetEncoding:
        """uint8 (V, H, W, 4) straight RGBA -> SheetEncoding (the parser runs here, once).

        ``premultiplied``: RGB is already premultiplied the reference way (as
        ``framing.frame_sheet_image`` returns it), so it is not premultiplied again.
        """
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 4 or images.shape[0] < 1:
            raise AniRenderError(
                f"A character sheet is (views, H, W, 4) RGBA; got shape {images.shape}."
            )
        if images.dtype != np.uint8:
            raise AniRenderError(f"Sheet images must be uint8 RGBA, got {images.dtype}.")
        _check_size(images.shape[1], images.shape[2], "The character sheet")
        for i, view in enumerate(images):
            if view[..., 3].mean() / 255.0 >= OPAQUE_MEAN_ALPHA:
                raise AniRenderError(
                    f"Sheet image {i} has no transparent background; CoNR needs the "
                    "character cut out (alpha 0 around it)."
                )
        rgb = images[..., :3] if premultiplied else premultiply_official(images)
        rgb = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2)
        alpha = torch.from_numpy(np.ascontiguousarray(images[..., 3:4])).permute(0, 3, 1, 2)
        sheet = (torch.cat([rgb, alpha], 1).float() / 255.0).to(self.device)
        with torch.inference_mode():
            feats, _ = self.parse_sheet(sheet[:, :3], with_udp=False)
            rgba = self.sheet_rgba_pyramid(sheet)
        return SheetEncoding(images.shape[1], images.shape[0], rgba, feats)

    def render(self, sheet: SheetEncoding, udp: np.ndarray) -> np.ndarray:
        """float32 (B, H, W, 4) UDP in [0,1] -> float32 (B, H, W, 4) premultiplied RGBA."""
        udp = check_udp(udp, sheet.size)
        udp = quantise_udp_mask(udp)
        out = np.empty(udp.shape, dtype=np.float32)
        step = self.frames_per_chunk(sheet)
        with torch.inference_mode():
            for start in range(0, len(udp), step):
                chunk = torch.from_numpy(udp[start : start + step]).permute(0, 3, 1, 2)
                pose = self.encode_pose(chunk.to(self.device))
                rgba = self.shade(pose, sheet.rgba, sheet.features, sheet.views)
                out[start : start + step] = rgba.permute(0, 2, 3, 1).float().cpu().numpy()
        return out

    def frames_per_chunk(self, sheet: SheetEncoding) -> int:
        """How many frames ``render`` shades in one batch for this sheet."""
        by_memory = self.pixels_per_batch // (sheet.views * sheet.size * sheet.size)
        return max(1, min(int(self.frames_per_batch), by_memory))

    def detect_udp(self, images: np.ndarray) -> np.ndarray:
        """UDP estimate (B, H, W, 4) from uint8 RGB or RGBA images (B, H, W, 3|4)."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] not in (3, 4) or images.dtype != np.uint8:
            raise AniRenderError(
                f"detect_udp wants uint8 (B, H, W, 3|4) images; got {images.dtype} {images.shape}."
            )
        _check_size(images.shape[1], images.shape[2], "The pose image")
        rgb = premultiply_official(images) if images.shape[-1] == 4 else images
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float() / 255.0
        with torch.inference_mode():
            _, udp = self.parse_sheet(x.to(self.device), with_udp=True)
        return udp.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)


def check_udp(udp, size: int | None = None, name: str = "UDP") -> np.ndarray:
    """Validate a (B, H, W, 4) float UDP: shape, finite, within [0,1]."""
    udp = np.asarray(udp)
    if udp.ndim == 3:
        udp = udp[None]
    if udp.ndim != 4 or udp.shape[-1] != 4 or not np.issubdtype(udp.dtype, np.floating):
        raise AniRenderError(
            f"{name} must be float (frames, H, W, 4) XYZV; got {udp.dtype} {udp.shape}."
        )
    if size is not None and udp.shape[1:3] != (size, size):
        raise AniRenderError(
            f"{name} is {udp.shape[2]}x{udp.shape[1]} but the sheet was encoded at "
            f"{size}x{size}; use the same working size."
        )
    if not np.isfinite(udp).all():
        raise AniRenderError(f"{name} contains NaN or infinite values.")
    lo, hi = float(udp.min()), float(udp.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise AniRenderError(f"{name} values must lie in [0, 1]; found {lo:.4g} .. {hi:.4g}.")
    return np.clip(udp, 0.0, 1.0).astype(np.float32, copy=False)


def randomize_weights(
    model: nn.Module, seed: int = 0, flow_scale: float = 0.3, gain: float = 1.0
) -> nn.Module:
    """Seeded He-style random weights that keep the signal alive through every level.

    PyTorch's default init shrinks activations layer after layer, so a randomly
    initialised CoNR paints nearly the same picture whatever the sheet; tests and
    benchmarks use this instead. The last layer of each shader block is scaled by
    ``flow_scale`` so that flows stay a few pixels long; ``gain`` scales every weight.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                w = module.weight
                if isinstance(module, nn.ConvTranspose2d):
                    fan_in = w.shape[0] * w.shape[2] * w.shape[3] / 4
                else:
                    fan_in = w.shape[1] * w.shape[2] * w.shape[3]
                std = gain * (2.0 / fan_in) ** 0.5
                w.copy_(torch.randn(w.shape, generator=gen) * std)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
            elif isinstance(module, nn.PReLU):
                module.weight.copy_(0.25 + 0.1 * torch.randn(module.weight.shape, generator=gen))
            elif isinstance(module, nn.InstanceNorm2d) and module.affine:
                module.weight.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=gen))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
        for module in model.modules():
            if isinstance(module, ShaderBlock):
                module.conv_last[2].weight.mul_(flow_scale)
    return model
