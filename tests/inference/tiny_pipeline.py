"""Tiny random checkpoints of the four inference models, written in train.py's format, and reference wavs.

Shared by tests/inference (through its conftest) and tests/test_infer_cli.py.
"""

import numpy as np
import soundfile as sf
import torch
from hydra.utils import instantiate

from speech.text.bpe import TextBPE

SR = 16000
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
MEL = {"_target_": "speech.audio.mel.LogMelSpectrogram", "sample_rate": SR, "n_fft": 1024, "win_length": 640,
       "hop_length": 160, "n_mels": 20}  # fmt: skip
CODEBOOK, LATENT = 27, 4


def _speaker(out_dim: int) -> dict:
    return {"_target_": "speech.models.speaker_encoder.SpeakerEncoder", "n_mels": 20, "dim": 16, "layers": 1,
            "heads": 2, "out_dim": out_dim, "stride": 4}  # fmt: skip


TOKENIZER = {
    "_target_": "speech.models.audio_tokenizer.AudioTokenizer", "n_mels": 20, "dim": 16, "encoder_layers": 1,
    "decoder_layers": 1, "ctc_layers": 0, "heads": 2, "kernel_size": 3, "conv_channels": 8, "conv_layers": 1,
    "dropout": 0.0,
    "quantizer": {"_target_": "speech.modules.quantizers.build_quantizer", "kind": "fsq", "dim": 16,
                  "fsq": {"levels": [3, 3, 3]}},
}  # fmt: skip
FLOW_VAE = {
    "_target_": "speech.models.flow_vae.FlowVAE",
    "encoder": {"_target_": "speech.modules.dac.DACEncoder", "channels": 2, "strides": [2, 4, 5, 8],
                "out_channels": 2 * LATENT},
    "decoder": {"_target_": "speech.modules.dac.DACDecoder", "in_channels": LATENT, "channels": 16,
                "strides": [8, 5, 4, 2]},
    "flow": None,
}  # fmt: skip
AR = {
    "_target_": "speech.models.ar_transformer.ARTransformer", "speaker_encoder": _speaker(12),
    "text_vocab_size": 300, "audio_vocab_size": CODEBOOK, "dim": 32, "layers": 1, "heads": 2, "max_len": 512,
}  # fmt: skip
FM = {
    "_target_": "speech.models.flow_matching.FlowMatching",
    "token_vocab_size": CODEBOOK, "latent_dim": LATENT,
    "estimator": {"_target_": "speech.modules.dit.DiT", "dim": 16, "layers": 1, "heads": 2,
                  "out_dim": LATENT},
    "speaker_encoder": _speaker(8),
}  # fmt: skip
MODELS = {"tokenizer": TOKENIZER, "flow_vae": FLOW_VAE, "ar": AR, "fm": FM}


def save_checkpoint(path, name, upstream=None, bpe=None, seed=0, model_config=None):
    """Builds ``MODELS[name]`` with random weights (every parameter perturbed, so no adaLN-Zero layer is
    silent) and writes a checkpoint the way train.py does: ``model.`` keys, the resolved config and, given
    ``bpe`` (``TextBPE.to_str()``), the text BPE under the key every AR checkpoint has, ``text_tokenizer``."""
    torch.manual_seed(seed)
    model_config = model_config or MODELS[name]
    model = instantiate(model_config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    data = {"sample_rate": SR, "mel": MEL, "datamodule": {"max_ref_duration": 6.0 if name == "ar" else 3.0}}
    config = {"model": model_config, "data": data, "upstream": upstream or {}}
    ckpt = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "config": config}
    if bpe is not None:
        ckpt["text_tokenizer"] = bpe  # spelled out, not TEXT_BPE_KEY: checkpoints on disk use this name
    torch.save(ckpt, path)
    return path


def make_bpe() -> TextBPE:
    texts = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 3
    return TextBPE.train(texts, vocab_size=300, min_frequency=1)


def write_checkpoints(root):
    """Tiny AR, flow-matching, tokenizer and Flow-VAE checkpoints under ``root``; the first two name the
    others in ``upstream``. Returns their paths by name."""
    bpe = make_bpe()
    upstream = {"tokenizer": str(root / "tokenizer.ckpt"), "flow_vae": str(root / "flow_vae.ckpt")}
    return {
        "tokenizer": save_checkpoint(root / "tokenizer.ckpt", "tokenizer", seed=1),
        "flow_vae": save_checkpoint(root / "flow_vae.ckpt", "flow_vae", seed=2),
        "ar": save_checkpoint(root / "ar.ckpt", "ar", upstream, bpe.to_str(), seed=3),
        "fm": save_checkpoint(root / "fm.ckpt", "fm", upstream, seed=4),
    }


def write_references(root):
    """Three reference wavs of 0.8, 1.2 and 1.6 s (harmonic tones in noise) at 16 kHz."""
    rng = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate((0.8, 1.2, 1.6)):
        t = np.arange(int(SR * seconds)) / SR
        wav = 0.3 * np.sin(2 * np.pi * (120 + 60 * i) * t) + 0.05 * rng.standard_normal(t.shape)
        paths.append(root / f"ref{i}.wav")
        sf.write(paths[-1], wav.astype(np.float32), SR)
    return paths


def save_adapter(path, ar_ckpt, name, seed=0, scale=0.3, rank=4):
    """An emotion adapter for the AR checkpoint ``ar_ckpt``, in the format the ar_adapter stage writes, with
    random ``A`` and ``B`` (a trained-looking update)."""
    from speech.checkpoints import ADAPTER_KEY, file_sha256
    from speech.checkpoints import MODEL_PREFIX as PREFIX
    from speech.lit.checkpoint import pretrained_model
    from speech.modules.lora import LoRAConfig, add_lora, lora_layers

    model = pretrained_model(ar_ckpt)
    config = LoRAConfig(rank=rank, alpha=float(rank))
    add_lora(model, config)
    g = torch.Generator().manual_seed(seed)
    state = {}
    for layer_name, layer in lora_layers(model).items():
        state[f"{PREFIX}{layer_name}.lora_a"] = torch.randn(layer.lora_a.shape, generator=g) * scale
        state[f"{PREFIX}{layer_name}.lora_b"] = torch.randn(layer.lora_b.shape, generator=g) * scale
    meta = {"name": name, "lora": config.to_dict(), "base": str(ar_ckpt), "base_sha256": file_sha256(ar_ckpt)}
    torch.save({"state_dict": state, "config": {"stage": {"adapter": name}}, ADAPTER_KEY: meta}, path)
    return path
