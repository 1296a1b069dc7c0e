"""A small patch critic on the mouth for ``train reenact --mouth-gan``.

The open mouth is a thin ink ring. A per-pixel loss cannot ask for a crisp ring whose
place is uncertain by a pixel: L1 draws none, squared error a faint blur. The critic sees
a square crop around the mouth of the target or the model's image, with the same crop of
the source and the five mouth sliders, and learns to tell them apart; the model learns to
draw mouths it cannot tell from the targets'. Hinge loss, spectral norm.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..pose_vector import MOUTH_NAMES, POSE_NAMES

#: side of the mouth crop the critic sees (about the crop's own size at 256 px)
CROP = 64
#: the crop's half side, as a share of the mouth box's width and height (the larger wins)
HALF_OF_WIDTH, HALF_OF_HEIGHT = 0.3, 0.9


def mouth_crops(images: torch.Tensor, boxes: torch.Tensor, crop: int = CROP) -> torch.Tensor:
    """N x C x crop x crop squares around each example's mouth box (``boxes`` N x 2 x 4 in
    pixels of ``images``), resampled bilinearly."""
    size = images.shape[-1]
    box = boxes[:, 1]
    centre = (box[:, :2] + box[:, 2:]) / 2
    extent = box[:, 2:] - box[:, :2]
    half = torch.maximum(extent[:, 0] * HALF_OF_WIDTH, extent[:, 1] * HALF_OF_HEIGHT)
    theta = torch.zeros(len(images), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = half / (size / 2)
    theta[:, :, 2] = centre / (size / 2) - 1
    grid = F.affine_grid(theta, (len(images), images.shape[1], crop, crop), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="border", align_corners=False)


def mouth_sliders(poses: torch.Tensor) -> torch.Tensor:
    start = POSE_NAMES.index(MOUTH_NAMES[0])
    return poses[:, start : start + len(MOUTH_NAMES)]


class MouthCritic(nn.Module):
    """(mouth crop, source mouth crop, mouth sliders) -> N x 1 x 8 x 8 realism scores."""

    def __init__(self, width: int = 32):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        cin = 3 + 3 + len(MOUTH_NAMES)
        self.layers = nn.Sequential(
            sn(nn.Conv2d(cin, width, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width, width * 2, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width * 2, width * 4, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width * 4, 1, 3, padding=1)),
        )

    def forward(self, mouth, source_mouth, sliders):
        n, _, h, w = mouth.shape
        x = torch.cat([mouth, source_mouth, sliders[:, :, None, None].expand(n, -1, h, w)], 1)
        return self.layers(x)


def critic_loss(critic: MouthCritic, real, fake, source, sliders) -> torch.Tensor:
    """Hinge loss of the critic on real and (detached) fake crops."""
    return (
        F.relu(1 - critic(real, source, sliders)).mean()
        + F.relu(1 + critic(fake.detach(), source, sliders)).mean()
    )


def drawing_loss(critic: MouthCritic, fake, source, sliders) -> torch.Tensor:
    """The model's side: raise the critic's score of its crops."""
    return -critic(fake, source, sliders).mean()
