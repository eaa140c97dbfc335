import pytest
import torch

from speech.models.ctc_judge import CTCJudge
from speech.text.byte_ctc import VOCAB_SIZE, greedy_decode, ids_to_text, text_to_ids


def test_byte_targets_roundtrip_every_script():
    for text in ["hello world", "grüße", "你好世界", "こんにちは"]:
        assert ids_to_text(text_to_ids(text)) == text
    ids = text_to_ids("aab")
    frames = [0, ids[0], ids[0], 0, ids[1], ids[2], ids[2], 0]  # blank separates the two a's
    assert greedy_decode(frames) == "aab"


def test_shapes_and_padding_invariance():
    torch.manual_seed(0)
    model = CTCJudge(dim=32, layers=2, heads=2, subsampling=4).eval()
    mel, lens = torch.randn(2, 97, 80), torch.tensor([97, 61])
    out = model(mel, lens)
    assert out.log_probs.shape == (2, 25, VOCAB_SIZE) and out.lens.tolist() == [25, 16]
    alone = model(mel[1:, :61], lens[1:])
    assert torch.allclose(out.log_probs[1, :16], alone.log_probs[0], atol=1e-5)
    assert torch.allclose(out.log_probs.exp().sum(-1), torch.ones(2, 25), atol=1e-4)


def test_bad_subsampling():
    with pytest.raises(ValueError, match="power of two"):
        CTCJudge(subsampling=3)
