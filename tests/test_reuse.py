"""Feature-reuse probes: block shuffling of images and common/uncommon mistakes."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
import torch
from torch import nn

from transferscope.analyses.blockshuffle import BlockShuffle, block_permutation, shuffle_blocks
from transferscope.analyses.mistakes import mistakes_table, pair_mistakes, pt_wrong_rit_right

SIZE = 8
IMAGES = torch.randn(3, 2, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def _reference_shuffle(images: torch.Tensor, block: int, perm: torch.Tensor) -> torch.Tensor:
    """The reference's Unfold → index → Fold (understanding-transfer-learning, libdata/utils.py)."""
    unfold = nn.Unfold(kernel_size=block, stride=block)
    fold = nn.Fold(output_size=images.shape[-1], kernel_size=block, stride=block)
    return fold(unfold(images)[..., perm])


def test_whole_image_block_is_identity():
    perm = block_permutation(SIZE, SIZE, torch.Generator().manual_seed(0))
    assert perm.tolist() == [0]
    assert torch.equal(shuffle_blocks(IMAGES, SIZE, perm), IMAGES)


@pytest.mark.parametrize("block", [1, 2, 4])
def test_shuffle_is_a_pixel_permutation_matching_the_reference(block):
    perm = block_permutation(SIZE, block, torch.Generator().manual_seed(block))
    assert sorted(perm.tolist()) == list(range((SIZE // block) ** 2))
    out = shuffle_blocks(IMAGES, block, perm)
    assert out.shape == IMAGES.shape and not torch.equal(out, IMAGES)
    # multiset of values preserved per image and channel
    torch.testing.assert_close(
        out.flatten(2).sort(dim=2).values, IMAGES.flatten(2).sort(dim=2).values, rtol=0, atol=0
    )
    torch.testing.assert_close(out, _reference_shuffle(IMAGES, block, perm), rtol=0, atol=0)
    # the same permutation moves the pixels of every image and channel alike
    positions = torch.arange(SIZE * SIZE, dtype=torch.float32).reshape(1, 1, SIZE, SIZE)
    moved = shuffle_blocks(positions, block, perm).flatten().long()
    expected = IMAGES.flatten(2)[:, :, moved].reshape(IMAGES.shape)
    assert torch.equal(out, expected)
    inverse = torch.argsort(perm)
    assert torch.equal(shuffle_blocks(out, block, inverse), IMAGES)


def test_block_shuffle_transform_is_fixed_by_its_seed():
    a, b = BlockShuffle(SIZE, 2, seed=3), BlockShuffle(SIZE, 2, seed=3)
    assert torch.equal(a(IMAGES[0]), b(IMAGES[0]))  # train and test transforms agree
    assert torch.equal(a(IMAGES[0]), shuffle_blocks(IMAGES[:1], 2, a.perm)[0])
    assert not torch.equal(a.perm, BlockShuffle(SIZE, 2, seed=4).perm)


def test_block_shuffle_errors_name_the_sizes():
    with pytest.raises(ValueError, match="image size 8 is not divisible by block size 3"):
        block_permutation(SIZE, 3)
    with pytest.raises(ValueError, match="image size 8 is not divisible by block size 3"):
        shuffle_blocks(IMAGES, 3, torch.arange(4))
    with pytest.raises(ValueError, match="permutation of the 16 blocks"):
        shuffle_blocks(IMAGES, 2, torch.arange(15))
    with pytest.raises(ValueError, match="permutation of the 16 blocks"):
        shuffle_blocks(IMAGES, 2, torch.zeros(16, dtype=torch.long))
    with pytest.raises(ValueError, match="square"):
        shuffle_blocks(torch.zeros(1, 1, 8, 4), 2, torch.arange(16))


# mistakes


def _correct(seed: int, n: int = 200) -> np.ndarray:
    return np.random.default_rng(seed).random(n) < 0.7


def test_pair_counts_match_a_loop_and_partition_the_samples():
    a, b = _correct(0), _correct(1)
    counts = pair_mistakes(a, b)
    loop = {"both_wrong": 0, "only_a_wrong": 0, "only_b_wrong": 0, "both_right": 0}
    for ca, cb in zip(a, b):
        key = {(0, 0): "both_wrong", (0, 1): "only_a_wrong", (1, 0): "only_b_wrong"}.get(
            (int(ca), int(cb)), "both_right"
        )
        loop[key] += 1
    assert {k: counts[k] for k in loop} == loop
    assert counts["uncommon"] == loop["only_a_wrong"] + loop["only_b_wrong"]
    assert sum(loop.values()) == counts["n"] == len(a)
    swapped = pair_mistakes(b, a)
    assert swapped["only_a_wrong"] == counts["only_b_wrong"]
    assert swapped["both_wrong"] == counts["both_wrong"]
    as_ints = pair_mistakes(torch.from_numpy(a.astype(np.int64)), b.astype(np.int64))
    assert as_ints == counts


def test_mistakes_table_has_one_row_per_pair():
    correct = {"P-T/0": _correct(0), "P-T/1": _correct(1), "RI-T/0": _correct(2)}
    table = mistakes_table(correct)
    assert list(zip(table["model_a"], table["model_b"])) == list(combinations(correct, 2))
    for row in table.iter_rows(named=True):
        expected = pair_mistakes(correct[row["model_a"]], correct[row["model_b"]])
        assert {k: row[k] for k in expected} == expected
    chosen = mistakes_table(correct, pairs=[("RI-T/0", "P-T/0")])
    assert chosen.height == 1 and chosen["model_a"].item() == "RI-T/0"
    with pytest.raises(ValueError, match="without correctness vectors: \\['X'\\]"):
        mistakes_table(correct, pairs=[("X", "P-T/0")])


def test_pt_wrong_rit_right_indices():
    pt, rit = _correct(0), _correct(1)
    positions = pt_wrong_rit_right(pt, rit)
    assert positions.tolist() == [i for i in range(len(pt)) if not pt[i] and rit[i]]
    dataset_ids = np.arange(len(pt)) * 10 + 7
    assert pt_wrong_rit_right(pt, rit, dataset_ids).tolist() == (positions * 10 + 7).tolist()
    assert len(positions) == pair_mistakes(pt, rit)["only_a_wrong"]


def test_mistake_inputs_are_validated():
    with pytest.raises(ValueError, match="P-T has 200 samples but RI-T has 199"):
        pt_wrong_rit_right(_correct(0), _correct(1, n=199))
    with pytest.raises(ValueError, match="boolean or 0/1"):
        pair_mistakes(np.array([0, 2, 1]), np.array([1, 1, 1]))
    with pytest.raises(ValueError, match="1-D"):
        pair_mistakes(np.zeros((2, 2), bool), np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="indices has shape"):
        pt_wrong_rit_right(_correct(0), _correct(1), np.arange(3))
