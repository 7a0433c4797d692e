"""Masked evaluation: v(x_T) equals a by-hand masked forward pass, whatever the batching."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transferscope.interactions.masking import image_game, log_odds, text_game
from transferscope.interactions.players import grid_bounds, grid_player_masks


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * 8 * 8, 3),
        )

    def forward(self, x):
        return self.net(x)


@pytest.fixture()
def cnn():
    torch.manual_seed(0)
    model = TinyCNN()
    model.train()(torch.randn(16, 1, 8, 8))  # non-trivial batch-norm statistics
    return model


def test_log_odds_is_logit_of_true_class_probability():
    logits = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    p = logits.softmax(-1).gather(1, labels[:, None]).squeeze(1).double()
    assert torch.allclose(log_odds(logits, labels), torch.log(p / (1 - p)), atol=1e-5)


def test_grid_players_partition_the_image():
    masks = grid_player_masks(32, 32, 3)
    assert masks.sum(0).eq(1).all()  # every pixel belongs to exactly one player
    assert grid_bounds(32, 3) == [(0, 11), (11, 21), (21, 32)]


def test_image_game_matches_by_hand_masking_and_batching(cnn):
    x, y = torch.randn(3, 1, 8, 8), torch.tensor([0, 2, 1])
    players = grid_player_masks(8, 8, 2)
    v = image_game(cnn, x, y, players, baseline=0.0, batch_size=5)
    assert v.shape == (3, 16) and v.dtype == torch.float64
    cnn.eval()
    for subset in (0, 5, 15):
        keep = torch.zeros(8, 8, dtype=torch.bool)
        for i in range(4):
            if subset >> i & 1:
                keep |= players[i]
        masked = torch.where(keep, x, torch.zeros_like(x))
        with torch.no_grad():
            expected = log_odds(cnn(masked), y)
        assert torch.allclose(v[:, subset], expected, atol=1e-5)
    assert torch.allclose(v, image_game(cnn, x, y, players, batch_size=1000), atol=1e-6)


def test_per_sample_regions_equal_shared_grid(cnn):
    x, y = torch.randn(2, 1, 8, 8), torch.tensor([1, 1])
    players = grid_player_masks(8, 8, 2)
    shared = image_game(cnn, x, y, players)
    per_sample = image_game(cnn, x, y, players.expand(2, -1, -1, -1))
    assert torch.allclose(shared, per_sample)


def test_bad_players_and_too_many_players(cnn):
    x, y = torch.randn(1, 1, 8, 8), torch.tensor([0])
    with pytest.raises(ValueError, match="do not match images"):
        image_game(cnn, x, y, grid_player_masks(6, 6, 2))
    with pytest.raises(ValueError, match="more than interactions.max_players = 3"):
        image_game(cnn, x, y, grid_player_masks(8, 8, 2), max_players=3)


def test_nan_in_v_is_an_error(cnn):
    cnn.net[-1].bias.data[0] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        image_game(cnn, torch.randn(1, 1, 8, 8), torch.tensor([0]), grid_player_masks(8, 8, 2))


class BagOfEmbeddings(nn.Module):
    """A text model whose output is a known function of the embeddings."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.emb = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 2)

    def embed(self, ids):
        return self.emb(ids)

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None):
        e = self.emb(input_ids) if inputs_embeds is None else inputs_embeds
        return self.out((e * attention_mask[..., None]).sum(1))


def test_text_game_masks_words_at_embedding_level():
    model = BagOfEmbeddings()
    ids = torch.tensor([[1, 2, 3, 4, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 0]])
    players = torch.zeros(1, 2, 5, dtype=torch.bool)
    players[0, 0, 1] = players[0, 0, 2] = True  # word 0 = tokens 1, 2
    players[0, 1, 3] = True
    baseline = torch.zeros(4)
    v = text_game(model, ids, attention, torch.tensor([1]), players, baseline)
    with torch.no_grad():
        e = model.emb(ids)
        only_word1 = e.clone()
        only_word1[0, 1:3] = 0.0  # word 0 masked, word 1 and non-players present
        expected = log_odds(
            model(inputs_embeds=only_word1, attention_mask=attention), torch.tensor([1])
        )
    assert torch.allclose(v[0, 0b10], expected)
    with torch.no_grad():
        full = log_odds(model(input_ids=ids, attention_mask=attention), torch.tensor([1]))
    assert torch.allclose(v[0, 0b11], full)


class MemoryLimited(nn.Module):
    """A model whose device 'runs out of memory' above ``limit`` inputs per batch."""

    def __init__(self, model, limit):
        super().__init__()
        self.model, self.limit, self.batches = model, limit, []

    def forward(self, x):
        if len(x) > self.limit:
            raise torch.OutOfMemoryError(f"{len(x)} inputs do not fit")
        self.batches.append(len(x))
        return self.model(x)


def test_out_of_memory_halves_the_batch_and_gives_the_same_game(cnn):
    x, y = torch.randn(3, 1, 8, 8), torch.tensor([0, 2, 1])
    players = grid_player_masks(8, 8, 2)
    expected = image_game(cnn, x, y, players, batch_size=48)
    limited = MemoryLimited(cnn, limit=13)
    with pytest.warns(UserWarning) as caught:
        v = image_game(limited, x, y, players, batch_size=64)
    steps = [str(w.message).split("batch size ")[1].split(" (")[0] for w in caught]
    assert steps == ["64; retrying at 32", "32; retrying at 16", "16; retrying at 8"]
    torch.testing.assert_close(v, expected)
    assert max(limited.batches) == 8 and sum(limited.batches) == 3 * 16
    with pytest.raises(RuntimeError, match="one masked input does not fit"), pytest.warns(UserWarning):  # fmt: skip
        image_game(MemoryLimited(cnn, limit=0), x, y, players, batch_size=4)


class FlagRecorder(nn.Module):
    """Logits of zeros; records the TF32 settings seen during each forward pass."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
                 torch.get_float32_matmul_precision())  # fmt: skip
        self.seen.append(flags)
        return torch.zeros(len(x), 2) + self.scale


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fp32_games_run_with_tf32_off_and_settings_restored(precision):
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, True
    torch.set_float32_matmul_precision("high")
    try:
        model = FlagRecorder()
        x, y = torch.zeros(2, 1, 4, 4), torch.tensor([0, 1])
        image_game(model, x, y, grid_player_masks(4, 4, 2), precision=precision, batch_size=8)
        expected = (False, False, "highest") if precision == "fp32" else (True, True, "high")
        assert model.seen and set(model.seen) == {expected}
        after = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
                 torch.get_float32_matmul_precision())  # fmt: skip
        assert after == (True, True, "high")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False
        torch.set_float32_matmul_precision("highest")
