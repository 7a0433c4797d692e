"""Training-time augmentation of image batches: the standard random-resized crop and horizontal
flip (Szegedy et al. 2015; timm's and torchvision's ImageNet recipe), applied on the device to a
batch of normalised images. Off unless ``training.<regime>.augment`` names it (the offline
default keeps its results); on in the paper configs, where real photos are fine-tuned.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

AUGMENTATIONS = ("none", "crop_flip")
SCALE = (0.08, 1.0)  # the crop's share of the image area (timm's and torchvision's default)
RATIO = (3 / 4, 4 / 3)  # the crop's aspect ratio


def crop_boxes(n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """float (n, 4) crop boxes (x0, y0, x1, y1) in pixels: area a uniform share of ``SCALE``
    of the image, log-uniform aspect ratio in ``RATIO``, clipped to the image, placed uniformly."""
    import torch

    area = height * width * torch.empty(n).uniform_(*SCALE, generator=generator)
    log_ratio = torch.empty(n).uniform_(math.log(RATIO[0]), math.log(RATIO[1]), generator=generator)
    ratio = log_ratio.exp()
    w = (area * ratio).sqrt().clamp(1, width)
    h = (area / ratio).sqrt().clamp(1, height)
    x0 = torch.rand(n, generator=generator) * (width - w)
    y0 = torch.rand(n, generator=generator) * (height - h)
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def crop_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random-resized crop of each image of ``x`` (N, C, H, W), resized back to H×W
    (bilinear), mirrored left-right with probability 1/2. Random draws come from ``generator``
    (on the CPU), so a seeded epoch augments the same way on any device."""
    import torch

    n, _, height, width = x.shape
    boxes = crop_boxes(n, height, width, generator)
    flip = torch.rand(n, generator=generator) < 0.5
    return resized_crops(x, boxes, flip)


def resized_crops(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Each image's box (x0, y0, x1, y1) resized to the image's size (bilinear, pixel centres
    aligned, one sample per output pixel: crops only enlarge), mirrored where ``flip``."""
    import torch
    from torchvision.ops import roi_align

    n, _, height, width = x.shape
    rois = torch.cat([torch.arange(n, dtype=boxes.dtype)[:, None], boxes], dim=1)
    out = roi_align(x, rois.to(x.device, x.dtype), (height, width), aligned=True, sampling_ratio=1)
    return torch.where(flip.to(x.device)[:, None, None, None], out.flip(-1), out)


def augmentation(name: str):
    """The batch transform ``training.<regime>.augment`` names: None for none."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"training augment = '{name}' unknown; allowed: {list(AUGMENTATIONS)}")
    return crop_flip if name == "crop_flip" else None
