"""A CoNR forward computed the way the reference implementation does, for comparison.

Straight from the four state dicts with functional ops, fp32, NCHW, batch 1, one sheet
view at a time, each view's inputs concatenated in checkpoint order and every
intermediate the reference computes (mask interpolation at every level, both flow
rescales). Nothing here is shared with ``anirender.models.conr``'s fast path: it is the
baseline for the equivalence tests and for ``bench/conr.py``.
"""

import numpy as np
import torch
import torch.nn.functional as F


def _norm(x, sd, key):
    return F.instance_norm(x, weight=sd[key + ".norm.weight"], bias=sd[key + ".norm.bias"])


def _resnet_block(x, sd, prefix, stride):
    if prefix + ".conv3.weight" in sd:  # bottleneck
        y = F.relu(_norm(F.conv2d(x, sd[prefix + ".conv1.weight"]), sd, prefix + ".bn1"))
        y = F.conv2d(y, sd[prefix + ".conv2.weight"], stride=stride, padding=1)
        y = F.relu(_norm(y, sd, prefix + ".bn2"))
        y = _norm(F.conv2d(y, sd[prefix + ".conv3.weight"]), sd, prefix + ".bn3")
    else:
        y = F.conv2d(x, sd[prefix + ".conv1.weight"], stride=stride, padding=1)
        y = F.relu(_norm(y, sd, prefix + ".bn1"))
        y = _norm(F.conv2d(y, sd[prefix + ".conv2.weight"], padding=1), sd, prefix + ".bn2")
    if prefix + ".downsample.0.weight" in sd:
        x = F.conv2d(x, sd[prefix + ".downsample.0.weight"], stride=stride)
        x = _norm(x, sd, prefix + ".downsample.1")
    return F.relu(y + x)


def resnet_unet(x, sd, decode):
    """Backbone features (deepest first) and, if ``decode``, the U-Net output."""
    x = F.conv2d(x, sd["backbone.0.weight"], stride=2, padding=3)
    stem = F.relu(_norm(x, sd, "backbone.1"))
    if "backbone.3.weight" in sd:
        x = F.conv2d(stem, sd["backbone.3.weight"], stride=2, padding=1)
    else:
        x = F.max_pool2d(stem, 3, 2, 1)
    feats = [stem]
    for layer in (4, 5, 6, 7):
        i = 0
        while f"backbone.{layer}.{i}.conv1.weight" in sd:
            stride = 2 if layer > 4 and i == 0 else 1
            x = _resnet_block(x, sd, f"backbone.{layer}.{i}", stride)
            i += 1
        feats.insert(0, x)
    out = None
    if decode:
        x = feats[0]
        for b, skip in enumerate([*feats[1:], None]):
            p = f"upsample_blocks.{b}"
            x = F.conv_transpose2d(x, sd[p + ".up.weight"], stride=2, padding=1)
            x = F.relu(_norm(x, sd, p + ".bn1"))
            if skip is not None:
                x = torch.cat([x, skip], 1)
            x = F.relu(_norm(F.conv2d(x, sd[p + ".conv2.weight"], padding=1), sd, p + ".bn2"))
        out = F.conv2d(x, sd["final_conv.weight"], sd["final_conv.bias"])
    return feats, out


def _warp(inp, flow):
    n, c, h, w = inp.shape
    g = flow.shape[1] // 2
    inp = inp.reshape(n * g, c // g, h, w)
    flow = flow.reshape(n * g, 2, h, w)
    gx = torch.linspace(-1.0, 1.0, w, device=flow.device).view(1, 1, 1, w).expand(n * g, 1, h, w)
    gy = torch.linspace(-1.0, 1.0, h, device=flow.device).view(1, 1, h, 1).expand(n * g, 1, h, w)
    flow = torch.cat([flow[:, 0:1] / ((w - 1.0) / 2.0), flow[:, 1:2] / ((h - 1.0) / 2.0)], 1)
    grid = (torch.cat([gx, gy], 1) + flow).permute(0, 2, 3, 1)
    out = F.grid_sample(inp, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(n, c, h, w)


def _rescale_flow(flow, like):
    s = like.shape[-1] / flow.shape[-1]
    if s == 1:
        return flow
    up = F.interpolate(
        flow, scale_factor=s, mode="bilinear", align_corners=False, recompute_scale_factor=False
    )
    return up * s


def _shader_block(x, sd, p, split):
    def prelu(y, key):
        return F.prelu(y, sd[key + ".weight"])

    y = prelu(F.conv2d(x, sd[p + ".conv0.0.weight"], sd[p + ".conv0.0.bias"], 2, 1), p + ".conv0.1")
    y = prelu(F.conv2d(y, sd[p + ".conv0.2.weight"], sd[p + ".conv0.2.bias"], 2, 1), p + ".conv0.3")
    s = 0
    while f"{p}.convblocks.{s}.0.weight" in sd:
        z = y
        for j in range(0, 12, 2):
            q = f"{p}.convblocks.{s}"
            z = F.conv2d(z, sd[f"{q}.{j}.weight"], sd[f"{q}.{j}.bias"], 1, 1)
            z = prelu(z, f"{q}.{j + 1}")
        y = z + y
        s += 1
    y = F.conv_transpose2d(y, sd[p + ".conv_last.0.weight"], sd[p + ".conv_last.0.bias"], 2, 1)
    y = prelu(y, p + ".conv_last.1")
    y = F.conv_transpose2d(y, sd[p + ".conv_last.2.weight"], sd[p + ".conv_last.2.bias"], 2, 1)
    outs, o = [], 0
    for n in split:
        outs.append(y[:, o : o + n] if n else None)
        o += n
    flow, msg, msg_flow, loc, loc_flow, mask = outs
    return flow, torch.sigmoid(mask), msg, msg_flow, loc, loc_flow


def _block_split(sd, p, last, flows=32):
    """Output channel split of one CINN block; only the last block has no local message."""
    out = sd[p + ".conv_last.2.weight"].shape[1]
    if last:  # 2 + msg + flows + 2 + msg
        msg = (out - 4 - flows) // 2
        return [2, msg, flows, 0, 0, 2 + msg]
    msg = (out - 4 - 2 * flows) // 3  # 2 + msg + flows + local(=msg) + flows + 2 + msg
    return [2, msg, flows, msg, flows, 2 + msg]


def cinn(sd, target_feats, x_reference, ref_feats, flows=32):
    """The shader as the reference runs it. ``x_reference``: (1, V, 4, H, W)."""
    y_flow, y_wref, y_feat, y_local, y_wflow, y_wref_mix, y_msg = [], [], [], [], [], [], []
    levels = sum(1 for k in sd if k.endswith(".conv_last.2.weight"))
    views = x_reference.shape[1]
    for k in range(levels):
        p = f"decoder_blocks.{k}"
        split = _block_split(sd, p, k == levels - 1, flows)
        st = {n: [] for n in ("flow", "mask", "msg", "loc", "wref", "feat")}
        for v in range(views):
            if k == 0:
                feat = ref_feats[0][:, v]
                acc = torch.zeros_like(feat[:, :2])
                wref = F.interpolate(x_reference[:, v], size=feat.shape[-2:], mode="bilinear")
                wfeat, local = feat, None
                wflow, wwref, wmsg = acc, wref, None
            else:
                acc = y_flow[-1][:, v]
                wref = y_wref[-1][:, v]
                wfeat = y_feat[-1][:, v] if y_feat[-1] is not None else None
                local = y_local[-1][:, v] if y_local else None
                wflow, wwref, wmsg = y_wflow[-1], y_wref_mix[-1], y_msg[-1]
            target = target_feats[k] if k < len(target_feats) else None
            parts = [acc, target, wref, wfeat, wflow, wwref, wmsg, local]
            x = torch.cat([t for t in parts if t is not None], 1)
            res, mask, msg, msg_flow, loc, loc_flow = _shader_block(x, sd, p, split)
            acc = res + acc
            nxt = ref_feats[k + 1][:, v] if k + 1 < len(ref_feats) else None
            size_from = nxt if nxt is not None else x_reference[:, v]
            size = size_from.shape[-2:]
            acc = _rescale_flow(acc, size_from)
            mask = F.interpolate(mask, size=size, mode="bilinear")
            msg = _warp(
                F.interpolate(msg, size=size, mode="bilinear"), _rescale_flow(msg_flow, size_from)
            )
            if loc is not None:
                loc = F.interpolate(loc, size=size, mode="bilinear")
                loc = _warp(loc, _rescale_flow(loc_flow, size_from))
            ref = F.interpolate(x_reference[:, v], size=size, mode="bilinear")
            st["wref"].append(_warp(ref, acc))
            st["feat"].append(_warp(nxt, acc) if nxt is not None else None)
            st["flow"].append(acc)
            st["mask"].append(mask)
            st["msg"].append(msg)
            st["loc"].append(loc)
        flow = torch.stack(st["flow"], 1)
        mask = torch.stack(st["mask"], 1)
        wref = torch.stack(st["wref"], 1)
        msg = torch.stack(st["msg"], 1)
        contrib = torch.softmax(mask, 1)
        y_flow.append(flow)
        y_wref.append(wref)
        y_feat.append(torch.stack(st["feat"], 1) if st["feat"][0] is not None else None)
        if st["loc"][0] is not None:
            y_local.append(torch.stack(st["loc"], 1))
        y_wflow.append(torch.sum(mask[:, :, 0:1] * contrib[:, :, 0:1] * flow, 1))
        y_wref_mix.append(torch.sum(mask[:, :, 0:1] * contrib[:, :, 0:1] * wref, 1))
        y_msg.append(torch.sum(mask[:, :, 2:] * contrib[:, :, 2:] * msg, 1))
    return y_msg[-1]


def rgba_decoder(x, sd):
    y = F.conv2d(
        F.relu(F.conv2d(x, sd["bottleneck.r0.norm1.weight"], sd["bottleneck.r0.norm1.bias"])),
        sd["bottleneck.r0.conv1.weight"],
        sd["bottleneck.r0.conv1.bias"],
        padding=1,
    )
    y = F.conv2d(
        F.relu(F.conv2d(y, sd["bottleneck.r0.norm2.weight"], sd["bottleneck.r0.norm2.bias"])),
        sd["bottleneck.r0.conv2.weight"],
        sd["bottleneck.r0.conv2.bias"],
        padding=1,
    )
    return torch.sigmoid(
        F.conv2d(y + x, sd["conv_rgba.0.weight"], sd["conv_rgba.0.bias"], padding=1)
    )


class ReferenceCoNR:
    """Per-frame, per-view fp32 CoNR from ``{sub-network: state dict}``."""

    def __init__(self, parts, flows=32, device="cpu"):
        self.device = torch.device(device)
        self.parts = {
            n: {k: v.detach().float().contiguous().to(self.device) for k, v in sd.items()}
            for n, sd in parts.items()
        }
        self.flows = flows
        self.parser_cache = None

    def set_sheet(self, images):
        """uint8 (V, H, W, 4) -> cached parser features (the reference's parser_ckpt)."""
        a = images[..., 3:4]
        rgb = (images[..., :3] * (a / 255.0)).clip(0, 255).astype(np.uint8)
        rgb = torch.from_numpy(rgb).permute(0, 3, 1, 2).float()[None].to(self.device) / 255.0
        a = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float()[None] / 255.0
        a = a.to(self.device)
        with torch.no_grad():
            feats, _ = resnet_unet((rgb[0] - 0.6) / 0.2970, self.parts["udpparsernet"], decode=True)
        self.features = [f[None] for f in feats]  # (1, V, C, h, w)
        self.x_reference = torch.cat([a * rgb, a], 2)

    def render_frame(self, udp):
        """float32 (H, W, 4) UDP -> float32 (H, W, 4) premultiplied RGBA."""
        label = torch.from_numpy(np.ascontiguousarray(udp, dtype=np.float32)).permute(2, 0, 1)[None]
        mask = (udp[..., 3:4] * 255).clip(0, 255).astype(np.uint8)
        mask = torch.from_numpy(mask).permute(2, 0, 1)[None].float() / 255.0
        x = torch.cat([label[:, :3] * mask, mask], 1).to(self.device)
        with torch.no_grad():
            tfeats, _ = resnet_unet(
                (x - 0.6) / 0.2970, self.parts["target_pose_encoder"], decode=False
            )
            msg = cinn(self.parts["shader"], tfeats, self.x_reference, self.features, self.flows)
            out = rgba_decoder(msg, self.parts["rgbadecodernet"])
        rgba = torch.cat([out[:, :3] * out[:, 3:4], out[:, 3:4]], 1)
        return rgba[0].permute(1, 2, 0).cpu().numpy()
