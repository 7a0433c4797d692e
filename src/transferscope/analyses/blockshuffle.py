"""Block shuffling of images (Neyshabur, Sedghi, Zhang 2020, Sec. 3.1; `libdata/utils.py`
RandomBlockShuffle): cut each size × size image into (size/b)² blocks of b × b pixels and
rearrange them by ONE fixed permutation shared by all train and test images. This destroys
visual features above the block scale while keeping low-level statistics; b = 1 permutes
pixels (all channels of a pixel move together), b = size is the identity.

Blocks are numbered row-major; output block k is input block perm[k] (as the reference's
Unfold → index → Fold).
"""

from __future__ import annotations

import torch


def _grid(size: int, block: int) -> int:
    if block < 1 or size < 1:
        raise ValueError(f"image size {size} and block {block} must be positive")
    if size % block:
        raise ValueError(f"image size {size} is not divisible by block size {block}")
    return size // block


def block_permutation(
    size: int, block: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A random permutation (LongTensor) of the (size/block)² blocks; draw it once per run."""
    grid = _grid(size, block)
    return torch.randperm(grid * grid, generator=generator)


def shuffle_blocks(images: torch.Tensor, block: int, perm: torch.Tensor) -> torch.Tensor:
    """Rearrange b × b blocks of square images (N, C, H, W) or (C, H, W) by ``perm``."""
    single = images.ndim == 3
    x = images.unsqueeze(0) if single else images
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(
            f"images must be square (N, C, H, W) or (C, H, W), got {tuple(images.shape)}"
        )
    n, c, size, _ = x.shape
    grid = _grid(size, block)
    perm = torch.as_tensor(perm, dtype=torch.long, device=x.device)
    if perm.ndim != 1 or not torch.equal(
        perm.sort().values, torch.arange(grid * grid, device=x.device)
    ):
        raise ValueError(
            f"perm must be a permutation of the {grid * grid} blocks of a {size}-pixel image "
            f"with block {block}; got {perm.numel()} entries"
        )
    blocks = x.reshape(n, c, grid, block, grid, block).permute(0, 1, 2, 4, 3, 5)
    blocks = blocks.reshape(n, c, grid * grid, block, block)[:, :, perm]
    out = blocks.reshape(n, c, grid, grid, block, block).permute(0, 1, 2, 4, 3, 5)
    out = out.reshape(n, c, size, size)
    return out[0] if single else out


class BlockShuffle:
    """Dataset transform: `shuffle_blocks` with a permutation fixed at construction from ``seed``."""

    def __init__(self, size: int, block: int, seed: int) -> None:
        self.block = block
        self.perm = block_permutation(size, block, torch.Generator().manual_seed(seed))

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return shuffle_blocks(image, self.block, self.perm)

    def __repr__(self) -> str:
        return f"BlockShuffle(block={self.block}, blocks={self.perm.numel()})"
