"""One block's math, three ways: the training ``forward`` over a whole (left-padded) sequence, prefill +
one-token decoding through ``forward`` with a KV cache, and the lean decoding ``step`` give the same
outputs (float32, within 1e-5)."""

import pytest
import torch

from speech.modules.kv_cache import KVCache
from speech.modules.rope import RotaryEmbedding
from speech.modules.transformer import TransformerBlock, attention_mask, positions_from_mask, slot_mask

pytestmark = pytest.mark.usefixtures("one_thread")
D, HEADS, T, STEPS = 32, 4, 5, 4
ATOL = 1e-5  # float32; outputs are O(1)


def make_block(seed=0):
    torch.manual_seed(seed)
    block = TransformerBlock(D, HEADS, dropout=0.1).eval()
    with torch.no_grad():  # trained-like norm gains: the lean step folds them into its weights
        block.attn_norm.weight.uniform_(0.5, 1.5)
        block.ffn_norm.weight.uniform_(0.5, 1.5)
    return block


def sequence(lens):
    """Left-padded ``x (b, T + STEPS, d)`` (``lens`` real prefix tokens per row) and its valid mask."""
    total = T + STEPS
    valid = torch.arange(total)[None] >= (T - torch.tensor(lens))[:, None]
    x = torch.randn(len(lens), total, D, generator=torch.Generator().manual_seed(1))
    return x, valid


def full(block, rope, x, valid):
    angles = rope.angles(positions_from_mask(valid))
    return block(x, rope=angles, mask=attention_mask(valid, causal=True))


@pytest.mark.parametrize("lens", [[T], [2, T, 4]], ids=["batch1", "left_padded"])
@pytest.mark.parametrize("lean", [False, True], ids=["forward", "step"])
def test_cached_decoding_equals_the_training_forward(lens, lean):
    block, rope = make_block(), RotaryEmbedding(D // HEADS)
    x, valid = sequence(lens)
    want = full(block, rope, x, valid)
    b, s = len(lens), T + STEPS + 2  # a cache longer than needed: its empty slots are masked out
    cache = KVCache(b, HEADS, s, D // HEADS, dtype=torch.float32, device="cpu")
    keys = torch.cat([valid, valid.new_ones(b, 2)], 1)  # (b, s): real tokens
    positions = positions_from_mask(keys)
    with torch.no_grad():
        prefill = block(x[:, :T], rope=rope.angles(positions[:, :T]), mask=slot_mask(keys, torch.arange(T)),
                        cache=cache)  # fmt: skip
        got = [prefill]
        cos, sin = rope.packed_angles(torch.arange(s))
        for i in range(T, T + STEPS):
            if lean:  # the lean step, attending over all slots (static) or the filled ones only
                rope_i = cos[positions[:, i]], sin[positions[:, i]]
                filled = i + 1 if i % 2 else None
                mask = slot_mask(keys, torch.tensor([i])) if filled is None else keys[:, None, None, :filled]
                y = block.step(
                    x[:, i], block.step_weights(), rope=rope_i, mask=mask, cache=cache, filled=filled
                )
            else:
                y = block(x[:, i : i + 1], rope=rope.angles(positions[:, i : i + 1]),
                          mask=slot_mask(keys, torch.tensor([i])), cache=cache)[:, 0]  # fmt: skip
            got.append(y[:, None])
    got = torch.cat(got, 1)
    for row, n in enumerate(lens):  # the valid positions only (padded queries only see themselves)
        torch.testing.assert_close(got[row, T - n :], want[row, T - n :], rtol=0, atol=ATOL)
    assert cache.length == T + STEPS


def test_a_cache_needs_a_mask():
    block = make_block()
    cache = KVCache(1, HEADS, 8, D // HEADS, dtype=torch.float32, device="cpu")
    with pytest.raises(ValueError, match="needs a mask of its filled slots"):
        block(torch.randn(1, 2, D), cache=cache)
    cos, sin = RotaryEmbedding(D // HEADS).packed_angles(torch.arange(1))
    with pytest.raises(ValueError, match="needs a mask of the filled slots or their count"):
        block.step(torch.randn(1, D), block.step_weights(), rope=(cos[0], sin[0]), mask=None, cache=cache)
    assert cache.length == 0  # refused before writing anything


def test_step_weights_follow_in_place_updates():
    block = make_block()
    kept = block.step_weights()
    assert block.step_weights() is kept
    with torch.no_grad():
        block.ffn.w2.weight.mul_(2.0)
    fresh = block.step_weights()
    assert fresh is not kept and torch.equal(fresh.w2, block.ffn.w2.weight.t())
    block.drop_step_weights()
    assert block.step_weights() is not fresh
