"""The DiT estimator: padding never changes valid outputs, adaLN-Zero starts as the identity, and the time
and global conditions reach the output."""

import pytest
import torch

from speech.modules.dit import DiT
from speech.tensors import lengths_to_mask

pytestmark = pytest.mark.usefixtures("one_thread")


def randomized_dit(seed: int = 0, **kwargs) -> DiT:
    """A DiT whose zero-initialized layers (adaLN-Zero, output) are random, so its outputs are not trivial."""
    torch.manual_seed(seed)
    dit = DiT(32, 2, 4, 6, **kwargs)
    for name, p in dit.named_parameters():
        if "ada" in name or "proj_out" in name:
            torch.nn.init.normal_(p, std=0.2)
    return dit.eval()


def test_starts_at_zero_output_and_identity_blocks():
    torch.manual_seed(0)
    dit = DiT(32, 2, 4, 6)
    x, t, c = torch.randn(2, 9, 32), torch.rand(2), torch.randn(2, 32)
    valid = torch.ones(2, 9, dtype=torch.bool)
    assert torch.equal(dit(x, t, c, valid), torch.zeros(2, 9, 6))
    block = dit.blocks[0]
    rope = dit.rope.angles(torch.arange(9).expand(2, -1))
    assert torch.equal(block(x, c, rope=rope, mask=None), x)


def test_padding_does_not_change_valid_outputs():
    dit = randomized_dit()
    lens = torch.tensor([11, 6, 8])
    x = torch.randn(3, 11, 32)
    t, c = torch.rand(3), torch.randn(3, 32)
    valid = lengths_to_mask(lens, 11)
    batched = dit(x + 100.0 * ~valid[..., None], t, c, valid)  # garbage in the padding
    for i, n in enumerate(lens.tolist()):
        alone = dit(x[i : i + 1, :n], t[i : i + 1], c[i : i + 1], torch.ones(1, n, dtype=torch.bool))
        torch.testing.assert_close(batched[i, :n], alone[0], atol=1e-5, rtol=1e-4)
        assert torch.all(batched[i, n:] == 0)


def test_time_and_condition_change_the_output():
    dit = randomized_dit()
    x, c = torch.randn(1, 7, 32), torch.randn(1, 32)
    valid = torch.ones(1, 7, dtype=torch.bool)
    base = dit(x, torch.tensor([0.2]), c, valid)
    assert (dit(x, torch.tensor([0.8]), c, valid) - base).abs().max() > 1e-3
    assert (dit(x, torch.tensor([0.2]), c + 1.0, valid) - base).abs().max() > 1e-3


def test_rejects_heads_that_do_not_divide_dim():
    with pytest.raises(ValueError, match="not divisible by heads"):
        DiT(30, 1, 4, 6)
