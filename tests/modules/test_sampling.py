"""Token sampling: filters, temperature, greedy, and VALL-E 2 repetition-aware sampling."""

import pytest
import torch

from speech.modules.sampling import draw, ras_next, repetition_share, sample_next, top_k_filter, top_p_filter


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(top_k_filter(logits, 2))
    assert kept.tolist() == [[False, True, False, True, False]]
    assert torch.equal(top_k_filter(logits, 0), logits) and torch.equal(top_k_filter(logits, 9), logits)


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.1, 0.5, 0.25, 0.15]])
    logits = probs.log()
    assert torch.isfinite(top_p_filter(logits, 0.7)).tolist() == [[False, True, True, False]]
    assert torch.isfinite(top_p_filter(logits, 0.75)).tolist() == [[False, True, True, False]]
    assert torch.isfinite(top_p_filter(logits, 0.76)).tolist() == [[False, True, True, True]]
    assert torch.isfinite(top_p_filter(logits, 0.01)).tolist() == [[False, True, False, False]]  # >= 1 kept


def test_draw_follows_the_distribution():
    probs = torch.tensor([0.7, 0.2, 0.1]).expand(20000, -1)
    counts = torch.bincount(draw(probs, torch.Generator().manual_seed(0)), minlength=3) / 20000
    assert torch.allclose(counts, torch.tensor([0.7, 0.2, 0.1]), atol=0.02)


def test_same_seed_same_tokens_and_greedy_ignores_the_seed():
    logits = torch.randn(64, 50, generator=torch.Generator().manual_seed(1))
    a = sample_next(logits, top_k=10, generator=torch.Generator().manual_seed(3))
    b = sample_next(logits, top_k=10, generator=torch.Generator().manual_seed(3))
    c = sample_next(logits, top_k=10, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    g1 = sample_next(logits, temperature=0, generator=torch.Generator().manual_seed(3))
    g2 = sample_next(logits, temperature=0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(g1, logits.argmax(-1)) and torch.equal(g1, g2)


def test_repetition_share():
    history = torch.tensor([[1, 2, 2, 2], [3, 3, 3, 3]])
    share = repetition_share(torch.tensor([2, 1]), history, window=4)
    assert share.tolist() == [0.75, 0.0]
    assert repetition_share(torch.tensor([2]), history[:1], window=2).item() == 1.0  # last 2 only


@pytest.mark.parametrize("repeated", [True, False])
def test_ras_resamples_only_repeated_tokens(repeated):
    # token 0 holds 60 %: the nucleus (top_p 0.5) always picks it
    probs = torch.tensor([0.6] + [0.4 / 9] * 9)
    logits = probs.log().expand(4000, -1)
    history = torch.full((4000, 10), 0 if repeated else 5)
    tokens = ras_next(logits, history, top_p=0.5, window=10, threshold=0.1,
                      generator=torch.Generator().manual_seed(0))  # fmt: skip
    other = (tokens != 0).float().mean().item()
    if repeated:  # resampled from the full distribution: about 40 % other tokens
        assert 0.35 < other < 0.45
    else:
        assert other == 0.0


def test_ras_is_off_for_greedy_and_empty_history():
    logits = torch.tensor([[0.0, 3.0, 1.0]])
    history = torch.ones(1, 10, dtype=torch.long)
    assert ras_next(logits, history, temperature=0).item() == 1
    empty = history[:, :0]
    tokens = ras_next(logits.expand(500, -1), empty.expand(500, -1), top_k=1,
                      generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert (tokens == 1).all()
