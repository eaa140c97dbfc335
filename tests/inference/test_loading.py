"""Building the pipeline from checkpoint files: upstream defaults and overrides, EMA, mismatches."""

import copy

import pytest
import torch
from tiny_pipeline import AR, MEL, save_checkpoint

from speech.checkpoints import EMA_KEY
from speech.inference import Synthesizer
from speech.inference.loading import load_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")


def test_upstream_defaults_and_overrides(checkpoints, tmp_path):
    parts = load_pipeline(checkpoints["ar"], checkpoints["fm"])
    assert parts["audio_tokenizer"].codebook_size == parts["ar"].audio_vocab_size
    assert parts["flow_vae"].latent_dim == parts["flow_matching"].latent_dim
    assert parts["max_reference_seconds"] == (6.0, 3.0) and parts["mel"].n_mels == 20
    assert parts["bpe"].encode("alpha beta")
    # Stored upstream paths that no longer exist: a clear error, and an override fixes it.
    bpe = torch.load(checkpoints["ar"], weights_only=False)["text_tokenizer"]
    moved = {"tokenizer": str(tmp_path / "gone.ckpt"), "flow_vae": str(tmp_path / "gone_vae.ckpt")}
    ar = save_checkpoint(tmp_path / "ar.ckpt", "ar", moved, bpe, seed=3)
    fm = save_checkpoint(tmp_path / "fm.ckpt", "fm", moved, seed=4)
    with pytest.raises(
        FileNotFoundError, match=r"tokenizer checkpoint .*gone.ckpt not found .* infer.py tokenizer_ckpt=..."
    ):
        load_pipeline(ar, fm)
    Synthesizer.from_checkpoints(ar, fm, checkpoints["tokenizer"], checkpoints["flow_vae"])
    bare_ar = save_checkpoint(tmp_path / "bare_ar.ckpt", "ar", None, bpe, seed=3)
    bare_fm = save_checkpoint(tmp_path / "bare_fm.ckpt", "fm", None, seed=4)
    with pytest.raises(
        ValueError, match=r"no flow_vae checkpoint: .*upstream.flow_vae; pass its path: .*flow_vae=..."
    ):
        load_pipeline(bare_ar, bare_fm, tokenizer=checkpoints["tokenizer"])


def test_ema_weights_are_preferred(checkpoints, tmp_path):
    ckpt = torch.load(checkpoints["fm"], weights_only=False)
    ckpt[EMA_KEY] = {k: torch.zeros_like(v) if k.endswith("speaker_proj.weight") else v
                     for k, v in ckpt["state_dict"].items()}  # fmt: skip
    path = tmp_path / "fm_ema.ckpt"
    torch.save(ckpt, path)
    ema = load_pipeline(checkpoints["ar"], path)["flow_matching"]
    raw = load_pipeline(checkpoints["ar"], path, use_ema=False)["flow_matching"]
    assert not ema.speaker_proj.weight.any() and raw.speaker_proj.weight.abs().sum() > 0


def test_mismatched_checkpoints_are_refused(checkpoints, tmp_path):
    ckpt = torch.load(checkpoints["ar"], weights_only=False)
    no_bpe = {k: v for k, v in ckpt.items() if k != "text_tokenizer"}
    torch.save(no_bpe, tmp_path / "no_bpe.ckpt")
    with pytest.raises(ValueError, match=r"holds no 'text_tokenizer': is it an AR checkpoint"):
        load_pipeline(tmp_path / "no_bpe.ckpt", checkpoints["fm"])

    other_mel = copy.deepcopy(ckpt)
    other_mel["config"]["data"]["mel"] = {**MEL, "hop_length": 200}
    torch.save(other_mel, tmp_path / "other_mel.ckpt")
    with pytest.raises(
        ValueError, match=r"the flow-matching checkpoint was trained on other mel settings than the AR"
    ):
        load_pipeline(tmp_path / "other_mel.ckpt", checkpoints["fm"])

    bigger = {**AR, "audio_vocab_size": 30}
    upstream = ckpt["config"]["upstream"]
    path = save_checkpoint(
        tmp_path / "ar30.ckpt", "ar", upstream, ckpt["text_tokenizer"], model_config=bigger
    )
    with pytest.raises(ValueError, match=r"AR audio_vocab_size is 30 but the tokenizer codebook_size is 27"):
        load_pipeline(path, checkpoints["fm"])

    # the same 27 ids read as three codes of 3 by the AR model, as one code by the tokenizer
    three_codes = {**AR, "audio_codebooks": 3}
    path = save_checkpoint(
        tmp_path / "ar_codes.ckpt", "ar", upstream, ckpt["text_tokenizer"], model_config=three_codes
    )
    with pytest.raises(ValueError, match=r"AR audio codebooks is 3 but the tokenizer codebooks is 1"):
        load_pipeline(path, checkpoints["fm"])
