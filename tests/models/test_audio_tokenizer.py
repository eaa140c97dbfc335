"""Audio tokenizer and its quantizers: shapes, lengths, padding invariance, codebook statistics."""

import pytest
import torch

from speech.models.audio_tokenizer import AudioTokenizer
from speech.modules.quantizers import FSQ, EMAVectorQuantizer, build_quantizer, usage_and_perplexity

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(kind: str = "fsq", **kwargs) -> AudioTokenizer:
    quantizer = build_quantizer(
        kind, 32, fsq={"levels": [5, 5, 3]}, vq={"codebook_size": 16, "codebook_dim": 8}
    )
    return AudioTokenizer(
        quantizer,
        n_mels=20,
        dim=32,
        encoder_layers=1,
        decoder_layers=1,
        ctc_layers=1,
        heads=2,
        kernel_size=5,
        conv_channels=16,
        dropout=0.0,
        mel_mean=-5.0,
        mel_std=2.0,
        **kwargs,
    )


def full_mask(b: int, t: int) -> torch.Tensor:
    return torch.ones(b, t, dtype=torch.bool)


@pytest.mark.parametrize("kind", ["fsq", "vq"])
def test_shapes_and_lens(kind):
    torch.manual_seed(0)
    model = tiny_model(kind)
    mel, mel_lens = torch.randn(3, 103, 20), torch.tensor([103, 64, 9])
    out = model(mel, mel_lens)
    assert out.token_lens.tolist() == (mel_lens // 4).tolist() == [25, 16, 2]
    assert out.tokens.shape == (3, 25) and out.mel_hat.shape == (3, 100, 20)
    assert out.ctc_log_probs.shape == (3, 50, 257) and out.ctc_lens.tolist() == [50, 32, 4]
    assert int(out.tokens.max()) < model.codebook_size == (75 if kind == "fsq" else 16)
    model.eval()
    tokens, token_lens = model.encode(mel, mel_lens)
    assert tokens.shape == (3, 25) and torch.equal(token_lens, mel_lens // 4)
    assert (tokens[2, 2:] == 0).all()
    decoded = model.decode(tokens, token_lens)
    assert decoded.shape == (3, 100, 20)
    assert len(model.transcribe(tokens, token_lens)) == 3


@pytest.mark.parametrize("kind", ["fsq", "vq"])
def test_padding_does_not_change_valid_tokens(kind):
    torch.manual_seed(0)
    model = tiny_model(kind)
    model.train()
    model(torch.randn(2, 80, 20), torch.tensor([80, 80]))  # initialize the VQ codebook
    model.eval()
    mel = torch.randn(1, 61, 20)
    alone, lens = model.encode(mel, torch.tensor([61]))
    padded = torch.cat([mel, torch.full((1, 40, 20), 7.0)], 1)
    batched, _ = model.encode(torch.cat([padded, torch.randn(1, 101, 20)]), torch.tensor([61, 101]))
    assert torch.equal(batched[0, : lens[0]], alone[0])
    dec_alone = model.decode(alone, lens)
    dec_batched = model.decode(batched[:1], lens)
    assert torch.allclose(dec_batched[0, : dec_alone.shape[1]], dec_alone[0], atol=1e-5)


def test_global_condition_carries_the_voice_to_the_decoder_only():
    """With ``global_condition`` the reconstruction depends on the utterance's mean (the voice); the tokens
    and the CTC head do not see it, and padding does not change it."""
    torch.manual_seed(0)
    model = tiny_model("fsq", global_condition=True).eval()
    mel = torch.randn(1, 64, 20)
    lens = torch.tensor([64])
    tokens, token_lens = model.encode(mel, lens)
    own = model.decode(tokens, token_lens, mel, lens)
    other = model.decode(tokens, token_lens, mel + 3.0, lens)  # another "voice": a louder reference
    assert not torch.allclose(own, other, atol=1e-3)
    padded = torch.cat([mel, torch.full((1, 36, 20), 9.0)], 1)
    assert torch.allclose(model.decode(tokens, token_lens, padded, lens), own, atol=1e-5)
    out = model(mel, lens)
    assert torch.allclose(out.mel_hat, model.normalize(own), atol=1e-5)
    with pytest.raises(ValueError, match="global_condition"):
        model.decode(tokens, token_lens)
    with pytest.raises(ValueError, match="global_condition"):
        tiny_model("fsq").eval().decode(tokens, token_lens, mel, lens)


def test_fsq_round_trip_and_codebook():
    fsq = FSQ(8, levels=[8, 5, 3])
    assert fsq.codebook_size == 120
    ids = torch.arange(120)[None]
    codes = fsq._indices_to_codes(ids)
    assert torch.equal(fsq._codes_to_indices(codes), ids)
    # every code is reachable: bounded values round to exactly `levels` integers per dim
    z = fsq._bound(torch.linspace(-20, 20, 2001)[:, None].expand(-1, 3))
    assert [len(torch.unique(torch.round(z[:, i]))) for i in range(3)] == [8, 5, 3]
    out = fsq(torch.randn(2, 30, 8), full_mask(2, 30))
    assert torch.allclose(fsq.embed(out.indices), out.quantized, atol=1e-6)
    assert out.loss.item() == 0.0


def test_usage_and_perplexity():
    usage, ppl = usage_and_perplexity(torch.tensor([10.0, 0, 0, 0]))
    assert usage.item() == 0.25 and ppl.item() == pytest.approx(1.0)
    usage, ppl = usage_and_perplexity(torch.ones(8))
    assert usage.item() == 1.0 and ppl.item() == pytest.approx(8.0)


def test_collapsed_codebook_reports_low_usage():
    torch.manual_seed(0)
    vq = EMAVectorQuantizer(4, codebook_size=64, codebook_dim=4, kmeans_iters=0, dead_code_steps=None)
    vq.train()
    vq(torch.randn(4, 50, 4), full_mask(4, 50))
    vq.eval()
    same = torch.ones(4, 50, 4)  # every frame identical: one code
    out = vq(same, full_mask(4, 50))
    assert out.usage.item() == pytest.approx(1 / 64) and out.perplexity.item() == pytest.approx(1.0)
    spread = vq(torch.randn(4, 50, 4), full_mask(4, 50))
    assert spread.usage.item() > 10 / 64 and spread.perplexity.item() > 5


def test_padding_does_not_update_ema_statistics():
    torch.manual_seed(0)
    vq = EMAVectorQuantizer(4, codebook_size=16, codebook_dim=4, dead_code_steps=None)
    vq.train()
    x = torch.randn(2, 20, 4)
    mask = full_mask(2, 20)
    mask[1, 10:] = False
    vq(x, mask)  # k-means init + first update
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    garbage = x.clone()
    garbage[1, 10:] = 100.0  # padding with wild values
    vq.load_state_dict(state)
    a = vq(x, mask)
    after_a = {k: v.clone() for k, v in vq.state_dict().items()}
    vq.load_state_dict(state)
    b = vq(garbage, mask)
    for k, v in vq.state_dict().items():
        assert torch.equal(v, after_a[k]), k
    assert torch.equal(a.indices, b.indices) and (a.indices[1, 10:] == 0).all()
    assert vq.cluster_size.sum().item() == pytest.approx(state["cluster_size"].sum().item(), rel=1e-4)


def test_dead_code_restart_revives_unused_codes():
    torch.manual_seed(0)
    vq = EMAVectorQuantizer(2, codebook_size=8, codebook_dim=2, kmeans_iters=0, dead_code_steps=1)
    with torch.no_grad():
        vq.proj_in.weight.copy_(torch.eye(2))
        vq.proj_in.bias.zero_()
    vq.train()
    vq(torch.randn(4, 50, 2), full_mask(4, 50))
    far = torch.zeros_like(vq.codebook[4:]) + 1e3
    vq.codebook[4:] = far  # four codes nothing will ever pick
    vq.cluster_size[4:] = 0.0
    data = torch.randn(4, 50, 2)
    vq(data, full_mask(4, 50))
    assert vq.restarts.item() >= 4
    assert vq.codebook.abs().max() < 100  # the far codes now sit on data frames
    vq.eval()
    assert vq(data, full_mask(4, 50)).usage.item() > 0.5


def test_unknown_quantizer_kind():
    with pytest.raises(ValueError, match="unknown quantizer kind 'rvq'"):
        build_quantizer("rvq", 8)


def test_fsq_rejects_bad_levels():
    with pytest.raises(ValueError, match="every FSQ level must be >= 2"):
        FSQ(8, levels=[5, 1])


def test_encode_refuses_training_mode():
    model = tiny_model("vq").train()
    with pytest.raises(RuntimeError, match="encode needs model.eval"):
        model.encode(torch.randn(1, 40, 20), torch.tensor([40]))
