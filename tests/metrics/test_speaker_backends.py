"""SIM backends: the WavLM-ECAPA loader on a tiny WavLM + checkpoint in the real layout, and resemblyzer."""

import argparse
import subprocess

import numpy as np
import pytest
import torch

from speech.audio.io import load_audio
from speech.metrics.speaker import wavlm_ecapa
from speech.metrics.speaker.resemblyzer_sim import ResemblyzerEmbedder
from speech.metrics.speaker.wavlm_ecapa import WavLMECAPAEmbedder
from speech.models.ecapa_tdnn import ECAPATDNN

TINY_WAVLM = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    conv_dim=(16, 16), conv_kernel=(10, 8), conv_stride=(5, 4), conv_bias=False,
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, num_buckets=32, max_bucket_distance=64,
    feat_extract_norm="layer", do_stable_layer_norm=True,
)  # fmt: skip

# HF WavLMModel name fragments -> s3prl's (WavLM.py / modules.py), written out independently of the loader.
HF_TO_S3PRL = [
    (".conv.weight", ".0.weight"), (".layer_norm.weight", ".2.1.weight"), (".layer_norm.bias", ".2.1.bias"),
]  # fmt: skip
ENCODER_TO_S3PRL = [
    (".attention.gru_rel_pos_linear.", ".self_attn.grep_linear."),
    (".attention.gru_rel_pos_const", ".self_attn.grep_a"),
    (".attention.rel_attn_embed.", ".self_attn.relative_attention_bias."),
    (".attention.", ".self_attn."),
    (".final_layer_norm.", ".final_layer_norm."),
    (".layer_norm.", ".self_attn_layer_norm."),
    (".feed_forward.intermediate_dense.", ".fc1."),
    (".feed_forward.output_dense.", ".fc2."),
]
TOP_TO_S3PRL = {
    "feature_projection.layer_norm.weight": "layer_norm.weight",
    "feature_projection.layer_norm.bias": "layer_norm.bias",
    "feature_projection.projection.weight": "post_extract_proj.weight",
    "feature_projection.projection.bias": "post_extract_proj.bias",
    "masked_spec_embed": "mask_emb",
    "encoder.pos_conv_embed.conv.bias": "encoder.pos_conv.0.bias",
    "encoder.pos_conv_embed.conv.parametrizations.weight.original0": "encoder.pos_conv.0.weight_g",
    "encoder.pos_conv_embed.conv.parametrizations.weight.original1": "encoder.pos_conv.0.weight_v",
    "encoder.layer_norm.weight": "encoder.layer_norm.weight",
    "encoder.layer_norm.bias": "encoder.layer_norm.bias",
}


def to_s3prl(name):
    if name in TOP_TO_S3PRL:
        return TOP_TO_S3PRL[name]
    if name.startswith("feature_extractor.conv_layers."):
        for hf, s3 in HF_TO_S3PRL:
            name = name.replace(hf, s3)
        return name
    if name.startswith("encoder.layers."):
        for hf, s3 in ENCODER_TO_S3PRL:  # first match wins
            if hf in name:
                return name.replace(hf, s3, 1)
    return name


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny WavLM folder (seed 0) and a checkpoint whose WavLM part is different (seed 1): 'fine-tuned'."""
    from transformers import WavLMConfig, WavLMModel

    root = tmp_path_factory.mktemp("wavlm_ecapa")
    torch.manual_seed(0)
    WavLMModel(WavLMConfig(**TINY_WAVLM)).save_pretrained(root / "wavlm")
    torch.manual_seed(1)
    finetuned = WavLMModel(WavLMConfig(**TINY_WAVLM)).state_dict()
    head = ECAPATDNN(feat_dim=32, num_hidden_states=3, channels=64, pooled_channels=96, emb_dim=24)
    with torch.no_grad():
        head.feature_weight.copy_(torch.tensor([0.3, -0.2, 0.5]))
    state = {"feature_extract.model." + to_s3prl(k): v for k, v in finetuned.items()}
    state.update(head.state_dict())
    return root, state, finetuned


def write(root, state, name, **extra):
    path = root / name
    torch.save({"model": state, **extra}, path)
    return path


def speechlike(seconds=1.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    voiced = 0.1 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return (voiced + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_real_layout_names_are_the_s3prl_ones(tiny):
    _, state, _ = tiny
    for key in ["feature_extract.model.feature_extractor.conv_layers.0.0.weight",
                "feature_extract.model.feature_extractor.conv_layers.1.2.1.bias",
                "feature_extract.model.encoder.pos_conv.0.weight_g", "feature_extract.model.mask_emb",
                "feature_extract.model.encoder.layers.0.self_attn.relative_attention_bias.weight",
                "feature_extract.model.encoder.layers.1.self_attn.grep_a",
                "feature_extract.model.encoder.layers.1.self_attn_layer_norm.weight",
                "feature_extract.model.encoder.layers.1.fc1.weight", "feature_weight",
                "layer2.Res2Conv1dReluBn.convs.6.weight"]:  # fmt: skip
        assert key in state


def s3prl_wavlm_large_keys():
    """Every parameter name of s3prl's WavLM-Large (layer_norm extractor, no conv bias, 24 layers)."""
    conv = ("0.weight", "2.1.weight", "2.1.bias")
    keys = [f"feature_extractor.conv_layers.{i}.{p}" for i in range(7) for p in conv]
    keys += ["layer_norm.weight", "layer_norm.bias", "post_extract_proj.weight", "post_extract_proj.bias",
             "mask_emb", "encoder.pos_conv.0.bias", "encoder.pos_conv.0.weight_g",
             "encoder.pos_conv.0.weight_v", "encoder.layer_norm.weight", "encoder.layer_norm.bias",
             "encoder.layers.0.self_attn.relative_attention_bias.weight"]  # fmt: skip
    per_layer = [f"self_attn.{m}_proj.{p}" for m in "qkv" for p in ("weight", "bias")]
    per_layer += ["self_attn.out_proj.weight", "self_attn.out_proj.bias", "self_attn.grep_linear.weight",
                  "self_attn.grep_linear.bias", "self_attn.grep_a"]  # fmt: skip
    modules = ("self_attn_layer_norm", "fc1", "fc2", "final_layer_norm")
    per_layer += [f"{m}.{p}" for m in modules for p in ("weight", "bias")]
    return keys + [f"encoder.layers.{i}.{k}" for i in range(24) for k in per_layer]


def test_every_wavlm_large_key_maps_one_to_one():
    from transformers import WavLMConfig, WavLMModel

    # microsoft/wavlm-large's settings
    config = WavLMConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                         intermediate_size=4096, feat_extract_norm="layer", do_stable_layer_norm=True,
                         conv_bias=False, num_buckets=320, max_bucket_distance=800)  # fmt: skip
    with torch.device("meta"):
        hf_keys = set(WavLMModel(config).state_dict())
    s3prl = s3prl_wavlm_large_keys()
    assert len(s3prl) == len(set(s3prl)) == 488
    state = {wavlm_ecapa.S3PRL_PREFIX + k: torch.empty(0) for k in s3prl}
    mapped, problems = wavlm_ecapa.map_wavlm_state(state, hf_keys)
    assert problems == [] and set(mapped) == hf_keys and len(mapped) == len(s3prl)
    # Without torch's weight-norm parametrization the legacy names are kept.
    legacy = wavlm_ecapa.s3prl_to_hf_name("encoder.pos_conv.0.weight_g", set())
    assert legacy == "encoder.pos_conv_embed.conv.weight_g"


def test_loads_finetuned_weights_and_embeds(tiny):
    root, state, finetuned = tiny
    emb = WavLMECAPAEmbedder(str(root / "wavlm"), str(write(root, state, "ok.pth")))
    loaded = emb.wavlm.state_dict()
    assert loaded.keys() == finetuned.keys()
    assert all(torch.equal(loaded[k], finetuned[k]) for k in finetuned)  # the checkpoint's, not the folder's
    assert emb.normalize  # layer-norm extractor and no preprocessor_config.json
    wav = speechlike()
    e = emb.embed(wav)
    assert e.shape == (24,) and e.dtype == np.float32 and np.isfinite(e).all()
    assert np.array_equal(e, emb.embed(wav))  # deterministic
    assert np.allclose(e, emb.embed(3.0 * wav), atol=1e-4)  # input is layer-normed like s3prl's
    assert emb.similarity(wav, wav) == pytest.approx(1.0, abs=1e-6)
    assert not np.allclose(e, emb.embed(speechlike(seed=5)[::-1].copy()), atol=1e-3)


def test_hidden_states_follow_s3prl_hooks(tiny):
    root, state, _ = tiny
    emb = WavLMECAPAEmbedder(str(root / "wavlm"), str(write(root, state, "ok.pth")))
    x = torch.from_numpy(speechlike())[None]
    with torch.no_grad():
        hs = emb.hidden_states(x)
        ref = emb.wavlm(torch.nn.functional.layer_norm(x, x.shape[-1:]), output_hidden_states=True)
    assert hs.shape == (3, 1, ref.last_hidden_state.shape[1], 32)
    # Layer inputs, then the final layer-normed encoder output (not the raw last layer output).
    assert torch.allclose(hs[:2], torch.stack(ref.hidden_states[:2]))
    assert torch.allclose(hs[2], ref.last_hidden_state)


def test_extra_and_missing_keys_are_named(tiny):
    root, state, _ = tiny
    bad = dict(state)
    bad["projection.weight"] = torch.zeros(3, 24)  # e.g. a training loss head
    bad["feature_extract.model.encoder.layers.0.self_attn.bias_k"] = torch.zeros(1, 1, 32)
    del bad["linear.bias"]
    del bad["feature_extract.model.encoder.layers.1.fc2.bias"]
    with pytest.raises(ValueError) as err:
        WavLMECAPAEmbedder(str(root / "wavlm"), str(write(root, bad, "bad.pth")))
    msg = str(err.value)
    assert "ECAPA unexpected: projection.weight" in msg
    assert "ECAPA missing: linear.bias" in msg
    assert "unmappable: feature_extract.model.encoder.layers.0.self_attn.bias_k (add_bias_kv" in msg
    assert "WavLM missing: encoder.layers.1.feed_forward.output_dense.bias" in msg


def test_checkpoint_without_wavlm_part_fails(tiny):
    root, state, _ = tiny
    head_only = {k: v for k, v in state.items() if not k.startswith("feature_extract.")}
    with pytest.raises(ValueError, match="WavLM missing: encoder.layers.0.attention.k_proj.weight"):
        WavLMECAPAEmbedder(str(root / "wavlm"), str(write(root, head_only, "head_only.pth")))


def test_layer_count_mismatch_is_explained(tiny):
    root, state, _ = tiny
    bad = dict(state, feature_weight=torch.zeros(25))
    with pytest.raises(ValueError, match=r"weights 25 hidden states but the WavLM .* yields 3"):
        WavLMECAPAEmbedder(str(root / "wavlm"), str(write(root, bad, "layers.pth")))


def test_missing_files_and_bad_containers(tiny, tmp_path):
    root, state, _ = tiny
    ckpt = write(root, state, "ok.pth")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nowhere'}.*config.json"):
        WavLMECAPAEmbedder(str(tmp_path / "nowhere"), str(ckpt))
    with pytest.raises(FileNotFoundError, match="wavlm_large_finetune.pth"):
        WavLMECAPAEmbedder(str(root / "wavlm"), str(tmp_path / "none.pth"))
    torch.save(state, tmp_path / "flat.pth")
    with pytest.raises(ValueError, match="'model'"):
        WavLMECAPAEmbedder(str(root / "wavlm"), str(tmp_path / "flat.pth"))
    pickled = write(tmp_path, state, "pickled.pth", args=argparse.Namespace(lr=1e-3))
    with pytest.raises(ValueError, match="allow_pickle=True"):
        WavLMECAPAEmbedder(str(root / "wavlm"), str(pickled))
    emb = WavLMECAPAEmbedder(str(root / "wavlm"), str(pickled), allow_pickle=True)
    with pytest.raises(ValueError, match="too short"):
        emb.embed(np.zeros(20, np.float32))


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    root = tmp_path_factory.mktemp("voices")
    texts = ["The quick brown fox jumps over the lazy dog near the river bank.",
             "Please call Stella and ask her to bring these things with her from the store."]  # fmt: skip
    wavs = {}
    for voice in ("slt", "rms"):
        for i, text in enumerate(texts):
            path = root / f"{voice}{i}.wav"
            subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
            wavs[f"{voice}{i}"] = load_audio(path, sample_rate=16000)[0]
    for voice in ("en-us+f3", "en-us+m1"):
        path = root / f"{voice}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), texts[1]], check=True)
        wavs[voice] = load_audio(path, sample_rate=16000)[0]
    path = root / "f3_0.wav"
    subprocess.run(["espeak-ng", "-v", "en-us+f3", "-w", str(path), texts[0]], check=True)
    wavs["f3_0"] = load_audio(path, sample_rate=16000)[0]
    return wavs


def test_resemblyzer_same_voice_beats_different_voice(voices):
    emb = ResemblyzerEmbedder()
    e = {k: emb.embed(v) for k, v in voices.items()}
    assert all(v.shape == (256,) and abs(np.linalg.norm(v) - 1) < 1e-4 for v in e.values())

    def cos(a, b):
        return float(e[a] @ e[b])

    # Same voice, different sentence vs. different voice on the same sentence (with a margin).
    assert cos("slt0", "slt1") > max(cos("slt0", "rms0"), cos("slt1", "rms1"), cos("slt1", "en-us+f3")) + 0.1
    assert cos("rms0", "rms1") > max(cos("rms0", "slt0"), cos("rms1", "en-us+m1")) + 0.1
    assert cos("f3_0", "en-us+f3") > cos("en-us+f3", "en-us+m1") + 0.1


def test_resemblyzer_trimming_and_silence(voices):
    emb = ResemblyzerEmbedder()
    wav = voices["slt0"]
    padded = np.concatenate([np.zeros(16000, np.float32), wav, np.zeros(16000, np.float32)])
    assert emb.preprocess(padded).size < padded.size - 16000  # leading/trailing silence trimmed
    assert emb.similarity(wav, padded) > 0.95
    assert ResemblyzerEmbedder(trim_silence=False).preprocess(padded).size == padded.size
    silent = emb.embed(np.zeros(16000, np.float32))  # no speech found: embedded untrimmed, no NaN
    assert np.isfinite(silent).all()
    with pytest.raises(ValueError, match="empty"):
        emb.embed(np.zeros(0, np.float32))
