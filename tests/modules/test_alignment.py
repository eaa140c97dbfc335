"""Guided attention: the guide's shape, the loss's range and direction, and the explicit attention weights
the loss reads (equal to what SDPA computes)."""

import pytest
import torch

from speech.modules.alignment import diagonal_guide, guided_attention_loss
from speech.modules.rope import RotaryEmbedding
from speech.modules.transformer import Attention


def one_hot_attention(k: int, n: int, column) -> torch.Tensor:
    """``(1, 1, k, n)`` attention that puts all of query j's weight on key ``column(j)``."""
    probs = torch.zeros(1, 1, k, n)
    for j in range(k):
        probs[0, 0, j, column(j)] = 1.0
    return probs


def test_the_guide_peaks_on_the_diagonal_and_is_zero_past_the_lengths():
    guide = diagonal_guide(torch.tensor([8, 4]), torch.tensor([4, 2]), 8, 4, sigma=0.2)
    assert guide.shape == (2, 8, 4)
    # row 0: 8 steps over 4 tokens, two steps per token: the peak of step j is token j // 2
    assert guide[0].argmax(-1).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert guide[1, 4:].abs().sum() == 0 and guide[1, :, 2:].abs().sum() == 0
    assert guide.max() <= 1


def test_the_loss_is_small_on_the_diagonal_and_near_one_off_it():
    k, n, lens = 12, 6, (torch.tensor([12]), torch.tensor([6]))
    diagonal = guided_attention_loss(one_hot_attention(k, n, lambda j: j // 2), *lens)
    reversed_ = guided_attention_loss(one_hot_attention(k, n, lambda j: n - 1 - j // 2), *lens)
    elsewhere = guided_attention_loss(torch.zeros(1, 1, k, n), *lens)  # all weight on keys that are not text
    assert diagonal < 0.1 < 0.5 < reversed_ and elsewhere == pytest.approx(1.0)


def test_padded_queries_and_empty_rows_do_not_count():
    k, n = 6, 3
    probs = one_hot_attention(k, n, lambda j: j // 2).repeat(2, 1, 1, 1)
    alone = guided_attention_loss(probs[:1], torch.tensor([6]), torch.tensor([3]))
    probs[1] = 0.0  # a row without text: its queries would score 1 if they counted
    assert guided_attention_loss(probs, torch.tensor([6, 4]), torch.tensor([3, 0])) == pytest.approx(alone)
    with pytest.raises(ValueError, match="sigma"):
        guided_attention_loss(probs, torch.tensor([6, 4]), torch.tensor([3, 0]), sigma=0)


def test_causal_probabilities_are_the_weights_sdpa_uses():
    torch.manual_seed(0)
    attn = Attention(16, heads=4).eval()
    x = torch.randn(2, 7, 16)
    rope = RotaryEmbedding(4).angles(torch.arange(7)[None].expand(2, -1))
    probs = attn.causal_probabilities(x, 4, rope=rope)
    assert probs.shape == (2, 4, 7, 7) and torch.allclose(probs.sum(-1), torch.ones(2, 4, 7))
    assert probs.triu(1).abs().sum() == 0  # causal
    v = attn.qkv(x).view(2, 7, 3, 4, 4)[:, :, 2].transpose(1, 2)  # (b, h, t, e)
    expected = attn.out((probs @ v).transpose(1, 2).reshape(2, 7, 16))
    torch.testing.assert_close(attn(x, rope=rope, is_causal=True), expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(attn.causal_probabilities(x, 2, rope=rope), probs[:, :2])
