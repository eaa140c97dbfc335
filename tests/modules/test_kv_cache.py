"""KV cache: writes land in their slots, every returned shape is static, the fill level is a tensor, and a
compiled one-token decoding step is traced once for all positions (no recompiles)."""

import pytest
import torch
from torch._dynamo.utils import counters

from speech.modules.kv_cache import KVCache
from speech.modules.rope import RotaryEmbedding
from speech.modules.transformer import TransformerBlock, slot_mask

pytestmark = pytest.mark.usefixtures("one_thread")
B, H, S, E = 2, 3, 7, 4


def make_cache(**kw):
    return KVCache(B, H, S, E, dtype=torch.float32, device="cpu", **kw)


def packed(t, seed):
    return torch.randn(B, 2, H, t, E, generator=torch.Generator().manual_seed(seed))


def test_prefill_then_steps_fill_slots_in_order_with_static_shapes():
    cache = make_cache()
    first, steps = packed(3, 0), [packed(1, i) for i in range(1, 4)]
    k, v = cache.update(first)
    assert k.shape == v.shape == (B, H, S, E) and cache.length == 3
    for i, kv in enumerate(steps):
        k, v = cache.update(kv)
        assert k.shape == v.shape == (B, H, S, E)  # all slots, filled or not
        assert cache.pos.shape == (1,) and cache.length == 4 + i
    expected = torch.cat([first, *steps], 3)  # (b, 2, h, 6, e)
    assert torch.equal(k[:, :, :6], expected[:, 0]) and torch.equal(v[:, :, :6], expected[:, 1])
    assert torch.equal(k[:, :, 6:], torch.zeros(B, H, 1, E))  # the empty slot is untouched


def test_reset_rewinds_without_reallocating():
    cache = make_cache()
    buffer = cache.kv
    cache.update(packed(5, 0))
    cache.reset()
    assert cache.length == 0
    k, _ = cache.update(packed(2, 1))
    assert cache.kv is buffer and cache.length == 2
    assert torch.equal(k[:, :, :2], packed(2, 1)[:, 0])


def test_full_cache_and_wrong_batch_are_errors():
    cache = make_cache()
    cache.update(packed(S, 0))
    with pytest.raises(IndexError, match="out of bounds"):
        cache.update(packed(1, 1))
    with pytest.raises(RuntimeError, match="set up for batch 2, got batch 1"):
        make_cache().update(packed(1, 0)[:1])


def test_cache_moves_with_its_module():
    cache = make_cache().to(torch.float64)
    assert cache.kv.dtype == torch.float64 and cache.pos.dtype == torch.long  # the counter stays integer
    assert not cache.state_dict()  # nothing of it goes into checkpoints


def decode_step(block, rope, cache, token, keys, pad):
    """A model's one-token decoding step over one block: everything it reads is a tensor of fixed shape."""
    slot = cache.pos
    cos, sin = rope.angles((slot - pad)[:, None])
    return block(token[:, None], rope=(cos, sin), mask=slot_mask(keys, slot), cache=cache)[:, 0]


def test_compiled_decoding_step_does_not_recompile():
    """``torch.compile`` traces the step once and reuses it at every later position; the eager backend
    keeps the test fast (recompiles are decided by the tracer, whatever the backend)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    block, rope = TransformerBlock(16, 2).eval(), RotaryEmbedding(8)
    caches = [KVCache(B, 2, 10, 8, dtype=torch.float32, device="cpu") for _ in range(2)]
    keys = torch.tensor([[False, True] + [True] * 8, [True] * 10])  # row 0 has one slot of left padding
    pad = (~keys).sum(1)
    prefix = torch.randn(B, 2, 16)
    for cache in caches:
        block(prefix, rope=rope.angles(torch.tensor([[0, 0], [0, 1]])), mask=slot_mask(keys, torch.arange(2)),
              cache=cache)  # fmt: skip
    counters.clear()
    compiled = torch.compile(decode_step, backend="eager", fullgraph=True)
    tokens = torch.randn(5, B, 16)
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        for x in tokens:
            got = compiled(block, rope, caches[0], x, keys, pad)
            want = decode_step(block, rope, caches[1], x, keys, pad)
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert caches[0].length == caches[1].length == 7
    assert counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()
