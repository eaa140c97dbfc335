"""LoRA adapters: an untrained adapter changes nothing, training touches only A and B, and the merged form
used at inference (``LoRAAdapter.applied``) gives the wrapped model's logits and tokens, then restores the
base weights bit for bit."""

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from speech.modules.lora import LoRAAdapter, LoRAConfig, LoRALinear, add_lora, lora_layers

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from test_ar_transformer import inputs, make_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def randomize(model: nn.Module, seed: int = 1, scale: float = 0.5) -> None:
    """A trained-looking adapter: random B (it starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_b.copy_(torch.randn(layer.lora_b.shape, generator=g) * scale)


def forward_logits(model, kw):
    audio = torch.randint(0, 30, (kw["text"].shape[0], 6), generator=torch.Generator().manual_seed(5))
    out = model(**kw, audio_tokens=audio, audio_lens=torch.full((audio.shape[0],), 6))
    return out.logits


def test_untrained_adapter_is_the_identity_and_only_a_b_train():
    base = make_model()
    wrapped = copy.deepcopy(base)
    names = add_lora(wrapped, LoRAConfig(rank=4))
    assert names == sorted(
        f"blocks.{i}.{p}" for i in range(2) for p in ("attn.qkv", "attn.out", "ffn.w13", "ffn.w2")
    )
    kw = inputs([5, 3])
    torch.testing.assert_close(forward_logits(wrapped, kw), forward_logits(base, kw), rtol=0, atol=0)
    trainable = sorted(n for n, p in wrapped.named_parameters() if p.requires_grad)
    assert trainable and all(n.endswith(("lora_a", "lora_b")) for n in trainable)
    assert len(trainable) == 2 * len(names)
    assert not any("speaker_encoder" in n for n in trainable)


def test_lora_linear_equals_its_merged_weight():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(6, 5, bias=True), LoRAConfig(rank=2, alpha=3.0))
    with torch.no_grad():
        layer.lora_b.normal_()
    x = torch.randn(4, 6)
    expected = x @ (layer.base.weight + 1.5 * layer.lora_b @ layer.lora_a).t() + layer.base.bias
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer.weight, layer.base.weight + layer.delta())


def test_applied_adapter_matches_the_wrapped_model_and_restores_the_base():
    base = make_model()
    wrapped = copy.deepcopy(base)
    config = LoRAConfig(rank=4, alpha=8.0)
    add_lora(wrapped, config)
    randomize(wrapped)
    adapter = LoRAAdapter.from_model("happy", wrapped, config)
    kw = inputs([5, 3], [4, 0], [6, 0])
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    plain_tokens = base.generate(**kw, temperature=0)
    with adapter.applied(base):
        merged = forward_logits(base, kw)
        merged_tokens = base.generate(**kw, temperature=0)
    torch.testing.assert_close(merged, forward_logits(wrapped, kw), rtol=1e-4, atol=1e-4)
    assert (merged - forward_logits(base, kw)).abs().max() > 0.1  # the adapter does change the model
    wrapped_tokens = wrapped.generate(**kw, temperature=0)
    for got, want in zip(merged_tokens, wrapped_tokens, strict=True):
        assert torch.equal(got, want)
    for name, param in base.named_parameters():
        assert torch.equal(param, before[name]), name
    # the decoding copy of the weights made under the adapter is not reused after it
    for got, want in zip(base.generate(**kw, temperature=0), plain_tokens, strict=True):
        assert torch.equal(got, want)


def test_applied_restores_after_an_error():
    base = make_model()
    wrapped = copy.deepcopy(base)
    add_lora(wrapped, LoRAConfig(rank=2))
    randomize(wrapped)
    adapter = LoRAAdapter.from_model("sad", wrapped, LoRAConfig(rank=2))
    before = base.blocks[0].attn.qkv.weight.detach().clone()
    with pytest.raises(RuntimeError, match="boom"), adapter.applied(base):
        assert not torch.equal(base.blocks[0].attn.qkv.weight, before)
        raise RuntimeError("boom")
    assert torch.equal(base.blocks[0].attn.qkv.weight, before)


def test_bad_targets_and_shapes_are_named():
    model = make_model()
    with pytest.raises(ValueError, match=r"\['blocks.\*.attn.nope'\] match no nn.Linear.*blocks.0.attn.qkv"):
        add_lora(copy.deepcopy(model), LoRAConfig(targets=("blocks.*.attn.nope",)))
    wrapped = copy.deepcopy(model)
    add_lora(wrapped, LoRAConfig(rank=2))
    with pytest.raises(ValueError, match="already has LoRA"):
        add_lora(wrapped, LoRAConfig(rank=2))
    adapter = LoRAAdapter.from_model("x", wrapped, LoRAConfig(rank=2))
    other = copy.deepcopy(model)
    other.blocks[1].ffn.w2 = nn.Linear(7, 32, bias=False)
    with pytest.raises(ValueError, match=r"does not fit layer 'blocks.1.ffn.w2'"):
        adapter.check_fits(other)
    del other.blocks[1]
    with pytest.raises(ValueError, match=r"'blocks.1.attn.qkv', which is not a linear layer"):
        adapter.check_fits(other)
    for bad, match in (({"rank": 0}, "rank"), ({"alpha": 0}, "alpha"), ({"dropout": 1.0}, "dropout"),
                       ({"targets": "blocks.*"}, "targets")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            LoRAConfig(**bad)
