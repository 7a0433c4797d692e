"""Image players from annotated part locations (CUB): choose well-separated parts, then turn each
into a disc-shaped mask, the discs made disjoint by giving a pixel to its nearest part.

``parts`` is float (N, P, 3) = (x, y, visible) in pixels of the stored image; a pixel (row r,
col c) has its centre at (c + 0.5, r + 0.5). ``priority`` orders the P parts: the first visible
part that is at least ``radius`` pixels from every part already chosen is chosen next.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads inside the functions: the config check imports this module
    import torch


def choose_parts(parts: torch.Tensor, n: int, radius: float, priority: list[int]) -> torch.Tensor:
    """Per image the indices of up to ``n`` visible parts, in ``priority`` order, each at least
    ``radius`` pixels from those chosen before it: int64 (N, n), -1 where fewer are usable."""
    import torch

    chosen = torch.full((len(parts), n), -1, dtype=torch.int64)
    for i, image in enumerate(parts):
        picked: list[int] = []
        for p in priority:
            if len(picked) == n:
                break
            if image[p, 2] <= 0:
                continue
            if all(torch.dist(image[p, :2], image[q, :2]) >= radius for q in picked):
                picked.append(p)
        chosen[i, : len(picked)] = torch.tensor(picked, dtype=torch.int64)
    return chosen


def usable_part_images(
    parts: torch.Tensor, n: int, radius: float, priority: list[int]
) -> torch.Tensor:
    """bool (N,): the images with ``n`` usable parts (see :func:`choose_parts`)."""
    return (choose_parts(parts, n, radius, priority) >= 0).all(dim=1)


def part_player_masks(
    parts: torch.Tensor, size: int, radius: float, n: int, priority: list[int]
) -> torch.Tensor:
    """bool (N, n, size, size): player i of an image is the disc of ``radius`` pixels around its
    i-th chosen part, minus the pixels nearer another chosen part (ties go to the earlier one);
    the pixel holding the part always belongs to it, so no player is empty and none overlap.
    Every image must have ``n`` usable parts (select them with :func:`usable_part_images`)."""
    chosen = choose_parts(parts, n, radius, priority)
    usable = (chosen >= 0).all(dim=1)
    if not usable.all():
        bad = int((~usable).sum())
        raise ValueError(
            f"{bad} of {len(parts)} images have fewer than {n} visible parts {radius} px apart; "
            "keep only the images that cub.usable_part_images selects"
        )
    import torch

    centres = torch.arange(size, dtype=torch.float32) + 0.5
    rows, cols = torch.meshgrid(centres, centres, indexing="ij")
    masks = torch.zeros(len(parts), n, size, size, dtype=torch.bool)
    for i in range(len(parts)):
        xy = parts[i, chosen[i], :2].float()  # (n, 2)
        dist2 = (cols[None] - xy[:, 0, None, None]) ** 2 + (rows[None] - xy[:, 1, None, None]) ** 2
        nearest = dist2.argmin(dim=0)  # the first minimum: ties go to the earlier player
        for k in range(n):
            masks[i, k] = (nearest == k) & (dist2[k] <= radius**2)
        for k in range(n):  # the part's own pixel, whatever the rounding
            r = min(max(int(xy[k, 1]), 0), size - 1)
            c = min(max(int(xy[k, 0]), 0), size - 1)
            masks[i, :, r, c] = False
            masks[i, k, r, c] = True
    return masks
