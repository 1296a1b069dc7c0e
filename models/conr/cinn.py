"""CoNR's shader: the CINN, six blocks from H/32 to H, and the RGBA decoder.

Each block predicts flows that warp the sheet onto the pose, with messages passed between
the sheet views; the views are combined per pixel by a softmax over their mask logits.
Unlike the reference, every view of every frame goes through a block in one batch, and
the parts of a block's input that are the same for all views of a frame (target
features, view-combined flow/RGBA/messages) are convolved once per frame. Where the
execution says ``native``, the glue between blocks runs as C loops on the CPU
(``level_step``, ``last_level``) instead of torch passes. State-dict keys and shapes are
those of the released ``shader.pth`` and ``rgbadecodernet.pth``."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn

from .. import transposed, winograd
from . import last_level, level_step
from .config import CoNRConfig

_transposers: ThreadPoolExecutor | None = None


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A channels-last copy of NCHW ``x``; on a CPU image by image as 2-D transposes.

    torch's general copy into channels-last runs 1.2-3x slower than its blocked 2-D
    transpose on CoNR's block inputs (e.g. 4 x 1094 x 64 x 64: 43 ms against 12 ms on the
    2-core AMD EPYC). That transpose is serial, so the images go to as many threads as
    torch uses. On a GPU, torch's own copy."""
    global _transposers
    n, c, h, w = x.shape
    if x.is_cuda or not x.is_contiguous() or h * w < 64 or c < 2:
        return x.contiguous(memory_format=torch.channels_last)
    out = torch.empty_like(x, memory_format=torch.channels_last)
    rows, planes = out.permute(0, 2, 3, 1).view(n, h * w, c), x.view(n, c, h * w)
    threads = min(n, torch.get_num_threads())
    if threads < 2:
        for i in range(n):
            rows[i].copy_(planes[i].t())
        return out
    if _transposers is None or _transposers._max_workers < threads:
        _transposers = ThreadPoolExecutor(threads, thread_name_prefix="anirender-transpose")
    inference = torch.is_inference_mode_enabled()  # thread-local, like grad mode

    def part(k: int) -> None:
        with torch.inference_mode(inference), torch.no_grad():
            for i in range(k, n, threads):
                rows[i].copy_(planes[i].t())

    for done in [_transposers.submit(part, k) for k in range(threads)]:
        done.result()
    return out


def upsample2(x):
    """Bilinear x2 (half-pixel centres), NCHW in and out.

    On a GPU the NCHW kernel gives each output pixel one thread that loops over every
    image and channel, which is slow for CoNR's many-channel, small maps (about two
    thirds of a 256 px frame on an H200, ``bench/gpu_profile.py``); the channels-last
    kernel spreads the channels over threads and computes the same weights. On a CPU,
    torch's kernel turns many-channel maps channels-last and back, so inference there
    takes two separable passes instead (``_double``): 1.3-8x faster on CoNR's
    shapes, the same numbers to rounding (5e-7)."""
    if x.is_cuda:
        y = F.interpolate(
            x.contiguous(memory_format=torch.channels_last),
            scale_factor=2.0,
            mode="bilinear",
            align_corners=False,
        )
        return y.contiguous()
    if x.requires_grad and torch.is_grad_enabled():  # the passes write into views
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    n, c, h, w = x.shape
    wide = x.new_empty(n, c, h, w, 2)
    _double(x, wide, -1)  # along x: (..., w) -> (..., w, 2)
    wide = wide.view(n, c, h, 2 * w)
    out = x.new_empty(n, c, h, 2, 2 * w)
    _double(wide, out, 2)  # along y: rows (h) -> (h, 2)
    return out.view(n, c, 2 * h, 2 * w)


def _double(x, out, dim: int) -> None:
    """Write x bilinearly doubled along ``dim`` into ``out``, which has a new axis of 2
    (even, odd sample) right after ``dim``: even samples are 3/4 of their pixel and 1/4
    of the one before, odd samples 1/4 of the one after; the borders repeat."""
    dim %= x.dim()
    n = x.shape[dim]

    def at(t, index, phase=None):
        t = t.narrow(dim, *index) if isinstance(index, tuple) else t.select(dim, index)
        return t if phase is None else t.select(dim + (isinstance(index, tuple)), phase)

    torch.lerp(at(x, (1, n - 1)), at(x, (0, n - 1)), 0.25, out=at(out, (1, n - 1), 0))
    torch.lerp(at(x, (0, n - 1)), at(x, (1, n - 1)), 0.25, out=at(out, (0, n - 1), 1))
    at(out, 0, 0).copy_(at(x, 0))
    at(out, n - 1, 1).copy_(at(x, n - 1))


_exp_by_sigmoid: bool | None = None


def exp_by_sigmoid_pays() -> bool:
    """Whether this CPU computes fp32 exp(m) faster as sigmoid(m) / (1 - sigmoid(m)),
    timed once per process (three alternated runs on 4 M values, ~0.1 s).

    The two forms agree within 4e-7 relative. torch's fp32 exp ran 2.2x slower than the
    sigmoid form on the 2-core AMD EPYC (4 x 66 x 256 x 256: 19 ms against 8.7; a 256 px,
    4-view frame 2.75 -> 2.63 s) and 3x faster on the Intel Xeon (20 ms against 60), so
    neither is right everywhere. The sigmoid form must win by 20 %."""
    global _exp_by_sigmoid
    if _exp_by_sigmoid is None:
        x = torch.rand(1 << 22)

        def by_exp():
            torch.exp(x)

        def by_sigmoid():
            e = torch.sigmoid(x)
            e.div_(torch.rsub(e, 1))

        best = {by_exp: float("inf"), by_sigmoid: float("inf")}
        with torch.inference_mode():
            for _ in range(3):
                for form in best:
                    start = time.perf_counter()
                    form()
                    best[form] = min(best[form], time.perf_counter() - start)
        _exp_by_sigmoid = best[by_sigmoid] < 0.8 * best[by_exp]
    return _exp_by_sigmoid


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
    if torch.is_grad_enabled() and flow.requires_grad:
        grid = torch.stack(
            [
                xs + flow[:, 0] * (scale / ((w - 1.0) / 2.0)),
                ys + flow[:, 1] * (scale / ((h - 1.0) / 2.0)),
            ],
            dim=-1,
        )
    else:  # written in place: no temporaries, no stacking copy
        grid = flow.new_empty(n * groups, h, w, 2)
        torch.mul(flow[:, 0], scale / ((w - 1.0) / 2.0), out=grid[..., 0]).add_(xs)
        torch.mul(flow[:, 1], scale / ((h - 1.0) / 2.0), out=grid[..., 1]).add_(ys)
    out = F.grid_sample(
        image, grid.to(image.dtype), mode="bilinear", padding_mode="border", align_corners=True
    )
    return out.view(n, c, h, w)


def _pieces(out: torch.Tensor, sizes: list[int], skip=()) -> list[torch.Tensor | None]:
    """Split a block's output on channels into contiguous fp32 NCHW pieces.

    None for empty pieces and for the indices in ``skip`` (channels not used).

    The block's output is channels-last; resampling and warping want each piece NCHW,
    and a channel slice of a batched NCHW tensor is not contiguous, so each piece is
    copied once here, at the block's resolution, rather than again after upsampling.
    On a CPU, large maps are copied image by image in bands of rows (``_BAND_BYTES``
    of the output each): plane by plane, a channel slice strides through the whole
    image and leaves the cache for every plane (4 x 164 x 256 x 256 bf16: 113 -> 69 ms;
    4 x 836 x 64 x 64 fp32: 39 -> 10 ms, Intel Xeon, 2 threads)."""
    n, c, h, w = out.shape
    rows = max(1, _BAND_BYTES // (w * c * out.element_size()))
    banded = (
        not out.is_cuda
        and rows < h
        and out.is_contiguous(memory_format=torch.channels_last)
        and not (torch.is_grad_enabled() and out.requires_grad)
    )
    pieces, start = [], 0
    for i, size in enumerate(sizes):
        piece = out[:, start : start + size]
        start += size
        if not size or i in skip:
            pieces.append(None)
        elif banded:
            copy = torch.empty(n, size, h, w, dtype=torch.float32, device=out.device)
            for image in range(n):
                for top in range(0, h, rows):
                    copy[image, :, top : top + rows].copy_(piece[image, :, top : top + rows])
            pieces.append(copy)
        else:
            pieces.append(piece.to(torch.float32, memory_format=torch.contiguous_format))
    return pieces


#: how much of a channels-last map ``_pieces`` copies at a time: the band and its copies
#: stay in a core's cache (about 2 MB on the CPUs measured)
_BAND_BYTES = 1 << 21


def _input_layout(weight: torch.Tensor):
    """How a first convolution's input is laid out: as its weights, for inference on a
    CPU (the convolution would otherwise reorder it with torch's slower copy)."""
    cl = weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last)
    if cl and not weight.is_cuda and not (torch.is_grad_enabled() and weight.requires_grad):
        return channels_last
    return lambda x: x


def _concatenate(parts: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """``torch.cat(parts, 1).to(dtype)`` in one pass: each part is converted as it is
    copied in (bf16 block inputs: 30-40 % faster than concatenating in fp32 first)."""
    if all(part.dtype == dtype for part in parts) or (
        torch.is_grad_enabled() and any(part.requires_grad for part in parts)
    ):
        return torch.cat(parts, 1).to(dtype)
    first = parts[0]
    out = first.new_empty(
        (first.shape[0], sum(part.shape[1] for part in parts), *first.shape[2:]), dtype=dtype
    )
    start = 0
    for part in parts:
        out[:, start : start + part.shape[1]].copy_(part)
        start += part.shape[1]
    return out


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

    def first_conv(self, view_parts, frame_parts, views: int, prepared=None):
        """conv0[0] over the concatenation of per-view and per-frame inputs.

        ``view_parts``/``frame_parts`` map input names to tensors (None = zero, skipped).
        Per-view tensors have a batch of frames*views, or of views alone when they are the
        same for every frame; per-frame tensors a batch of frames (frame-major order).
        ``prepared``: the inputs already concatenated (``level_step.NextLevel``); the
        parts are then ignored. Returns (frames*views, c, h/2, w/2).
        """
        if prepared is not None:
            key = (prepared.view_names, prepared.frame_names)
        else:
            view_parts = {k: v for k, v in view_parts.items() if v is not None}
            frame_parts = {k: v for k, v in frame_parts.items() if v is not None}
            key = (tuple(view_parts), tuple(frame_parts))
        conv = self.conv0[0]
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
        layout = _input_layout(w)
        if prepared is not None:
            xv = prepared.view_input
        else:
            xv = layout(_concatenate(list(view_parts.values()), w.dtype))
        yv = F.conv2d(xv, wv, conv.bias, 2, 1)
        if not key[1]:
            return yv
        if prepared is not None:
            xf = prepared.frame_input
        else:
            xf = layout(_concatenate(list(frame_parts.values()), w.dtype))
        yf = F.conv2d(xf, wf, None, 2, 1)
        return (yv.unflatten(0, (-1, views)) + yf.unsqueeze(1)).flatten(0, 1)

    def forward(
        self, view_parts, frame_parts, views: int, chunk: int = 0, winograd_on=(), prepared=None
    ):
        """``chunk``: run the convolutions after the first on this many images at a time
        (0: all at once); each image is independent there, so only the speed changes.
        ``winograd_on``: the kinds of convolution (``nn.Conv2d`` for the residual stacks'
        3x3, ``nn.ConvTranspose2d`` for the last two) run by Winograd
        (``models.winograd``) where it applies; inference only."""
        x = self.first_conv(view_parts, frame_parts, views, prepared)
        if chunk and x.shape[0] > chunk:
            return torch.cat([self._convolve(part, winograd_on) for part in x.split(chunk)], 0)
        return self._convolve(x, winograd_on)

    def _convolve(self, x, winograd_on=()):
        x = self.conv0[1](x)
        x = self.conv0[3](self.conv0[2](x))
        if torch.is_grad_enabled():
            for stack in self.convblocks:
                x = stack(x) + x
            return self.conv_last(x)

        def convolve(conv, x):
            if type(conv) in winograd_on:
                if winograd.applies(conv, x) or winograd.applies_transposed(conv, x):
                    return winograd.convolve(conv, x)
            if transposed.applies(conv, x):  # the coarse levels' wide transposed ones
                return transposed.convolve(conv, x)
            return conv(x)

        for stack in self.convblocks:
            y = x
            for conv, prelu in zip(stack[::2], stack[1::2]):
                y = prelu(convolve(conv, y))
            x = y + x
        up, prelu, last = self.conv_last
        return convolve(last, prelu(convolve(up, x)))


class CINN(nn.Module):
    """The six-level cross-view shader; holds only ``decoder_blocks`` (checkpoint keys)."""

    def __init__(self, config: CoNRConfig):
        super().__init__()
        self.config = config
        #: images per convolution batch inside each block (0: all); see ShaderBlock.forward
        self.chunk = 0
        #: the kinds of convolution (``nn.Conv2d``, ``nn.ConvTranspose2d``) run by
        #: Winograd where it applies (CPU fp32 inference); chosen apart, CPUs differ on them
        self.winograd_kinds: tuple[type[nn.Module], ...] = ()
        #: the steps between levels and the last level's warp and mix by the C loops where
        #: they apply (``level_step``, ``last_level``)
        self.native = False
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

            The mask is a sigmoid in (0, 1), so exp needs no max subtraction."""
            if (
                mask.dtype == torch.float32
                and mask.device.type == "cpu"
                and not (torch.is_grad_enabled() and mask.requires_grad)
                and exp_by_sigmoid_pays()
            ):
                e = torch.sigmoid(mask)
                e = e.div_(torch.rsub(e, 1))
            else:
                e = torch.exp(mask)
            return (mask * e).unflatten(0, (frames, views)), e.unflatten(0, (frames, views)).sum(1)

        def mix(weights, values, channels):  # softmax-weighted sum over views
            num, den = weights
            v = values.unflatten(0, (frames, views))
            return (num[:, :, channels] * v).sum(1) / den[:, channels]

        state, prepared = {}, None
        last = len(self.decoder_blocks) - 1
        for k, block in enumerate(self.decoder_blocks):
            if prepared is not None:  # the C loops made this block's inputs
                view = frame = {}
            elif k == 0:
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
            out = block(view, frame, views, self.chunk, self.winograd_kinds, prepared)
            n_msg, n_msg_flow, n_loc, n_loc_flow, _ = block.split[1:]
            if k == last:  # only the combined message leaves the shader
                if self.native:
                    mixed = last_level.mix(out, block.split, views)
                    if mixed is not None:
                        return mixed
                sizes = [*block.split[:-1], 2, block.split[-1] - 2]
                _, o_msg, o_msg_flow, _, _, _, o_mask = _pieces(out, sizes, skip=(0, 3, 4, 5))
                msg = warp(o_msg, o_msg_flow)
                weights = view_weights(torch.sigmoid(o_mask))
                return mix(weights, msg, slice(None))
            prepared = None
            if self.native and trace is None:
                prepared = level_step.step(
                    out,
                    block.split,
                    views,
                    state.get("flow"),
                    sheet_rgba[k + 1],
                    sheet_features[k + 1] if k + 1 < len(sheet_features) else None,
                    target_features[k + 1] if k + 1 < len(target_features) else None,
                    self.decoder_blocks[k + 1].ranges,
                )
                if prepared is not None:
                    state = {"flow": prepared.flow}
                    continue
            o_flow, o_msg, o_msg_flow, o_loc, o_loc_flow, o_mask = _pieces(out, block.split)
            flow = o_flow if k == 0 else o_flow + state["flow"]
            # everything moves to the next level's resolution; flows scale with it
            flow = upsample2(flow) * 2.0
            msg = warp(upsample2(o_msg), upsample2(o_msg_flow), scale=2.0)
            local = None
            if n_loc:
                local = warp(upsample2(o_loc), upsample2(o_loc_flow), scale=2.0)
            weights = view_weights(upsample2(torch.sigmoid(o_mask)))
            if trace is not None:
                trace.setdefault("flows", []).append(flow)
                trace.setdefault("mask_logits", []).append(upsample2(o_mask[:, :1]))
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
