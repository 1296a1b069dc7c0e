"""CoNR's encoders: torchvision-style ResNets with InstanceNorm, as U-Nets.

``udp_parser_net`` (ResNet-50, the sheet images' parser and UDP detector) and
``target_pose_encoder_net`` (ResNet-18 over the target UDP). Features come deepest
first (H/32 ... H/2). State-dict keys and shapes are those of the released
``udpparsernet.pth`` and ``target_pose_encoder.pth``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import CoNRConfig


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
