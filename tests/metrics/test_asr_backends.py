"""ASR backends: a tiny random Whisper end to end, transcripts, PocketSphinx on flite speech, Paraformer."""

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from speech.audio.io import load_audio
from speech.metrics.asr.base import ASR_SAMPLE_RATE, ASRBackend
from speech.metrics.asr.paraformer import ParaformerASR
from speech.metrics.asr.pocketsphinx_asr import PocketSphinxASR
from speech.metrics.asr.transcripts import TranscriptsASR
from speech.metrics.asr.whisper import WhisperASR
from speech.metrics.wer import score_utterance, utterance_wer

SILENCE = np.zeros(ASR_SAMPLE_RATE, dtype=np.float32)


# ------------------------------------------------------------------------------------------------ whisper
def _byte_level_alphabet() -> list[str]:
    """The 256 printable stand-ins GPT-2/Whisper byte-level BPE uses for the byte values."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    chars, shifted = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + shifted))
            shifted += 1
    return chars


@pytest.fixture(scope="module")
def tiny_whisper_dir(tmp_path_factory):
    """A randomly initialized 1-layer Whisper with a byte-only tokenizer, saved like a hub snapshot."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    special = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        "<|en|>",
        "<|zh|>",
        "<|translate|>",
        "<|transcribe|>",
    ]
    special.append("<|notimestamps|>")
    vocab = {c: i for i, c in enumerate(_byte_level_alphabet())}
    vocab |= {s: len(vocab) + i for i, s in enumerate(special)}
    tokenizer = transformers.WhisperTokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": special[1:]})
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in special}
    processor = transformers.WhisperProcessor(
        feature_extractor=transformers.WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer
    )
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = transformers.WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_target_positions=32, pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
        decoder_start_token_id=sot,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.WhisperForConditionalGeneration(config)
    model.generation_config = transformers.GenerationConfig(
        decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot, max_length=10, is_multilingual=True,
        lang_to_id={"<|en|>": ids["<|en|>"], "<|zh|>": ids["<|zh|>"]},
        task_to_id={"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"],
    )  # fmt: skip
    path = tmp_path_factory.mktemp("whisper-tiny")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def test_whisper_loads_and_transcribes_in_batches(tiny_whisper_dir):
    asr = WhisperASR(tiny_whisper_dir, batch_size=2, device="cpu")
    noise = 0.1 * np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    texts = asr.transcribe([SILENCE, noise, SILENCE[:4000]], language="en-US")
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert not any("<|" in t for t in texts)  # special tokens are stripped
    assert len(asr.transcribe([SILENCE], language="zh")) == 1  # another forced language token
    assert asr.transcribe([SILENCE], language="en") == [texts[0]]  # batching does not change a result


def test_whisper_missing_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="Whisper model folder not found: .*nowhere"):
        WhisperASR(tmp_path / "nowhere")


# -------------------------------------------------------------------------------------------- transcripts
def test_transcripts_tsv_and_jsonl(tmp_path):
    tsv = tmp_path / "hyp.tsv"
    tsv.write_text("u1\tHello world\nu2\t\n\ngt/u1\tHello, world!\n", encoding="utf-8")
    asr = TranscriptsASR(tsv)
    assert asr.transcribe([SILENCE] * 3, language="en", utts=["u2", "u1", "gt/u1"]) == [
        "",
        "Hello world",
        "Hello, world!",
    ]
    jsonl = tmp_path / "hyp.jsonl"
    jsonl.write_text("\n".join(json.dumps({"utt": u, "text": t}) for u, t in [("a", "你好"), ("b", "x")]))
    assert TranscriptsASR(jsonl).transcribe([SILENCE], language="zh", utts=["a"]) == ["你好"]


def test_transcripts_errors_name_the_file(tmp_path):
    tsv = tmp_path / "hyp.tsv"
    tsv.write_text("u1\thello\n")
    with pytest.raises(KeyError, match=r"hyp\.tsv: no transcript for 1 utt\(s\): 'u9'"):
        TranscriptsASR(tsv).transcribe([SILENCE], language="en", utts=["u9"])
    with pytest.raises(KeyError, match="ground-truth items are looked up as 'gt/<utt>'"):
        TranscriptsASR(tsv).transcribe([SILENCE], language="en", utts=["gt/u1"])
    with pytest.raises(ValueError, match="one utt per waveform"):
        TranscriptsASR(tsv).transcribe([SILENCE], language="en")
    for text, match in [
        ("u1\ta\nu1\tb\n", "hyp.tsv:2: utt 'u1' appears twice"),
        ("u1 no tab\n", "hyp.tsv:1: .*no tab"),
    ]:
        tsv.write_text(text)
        with pytest.raises(ValueError, match=match):
            TranscriptsASR(tsv)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"utt": "a", "text": "x"}\n{"utt": "b"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        TranscriptsASR(bad)
    with pytest.raises(FileNotFoundError, match="missing.tsv"):
        TranscriptsASR(tmp_path / "missing.tsv")


# ------------------------------------------------------------------------------------------- pocketsphinx
SENTENCES = {
    "fox": "The quick brown fox jumps over the lazy dog.",
    "door": "Please open the door and close the window.",
    "weather": "It is a sunny day in the city today.",
}


def _asr_config(name):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    configs = Path(__file__).resolve().parents[2] / "configs"
    return instantiate(OmegaConf.load(configs / "asr" / f"{name}.yaml"))


@pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed")
@pytest.mark.parametrize("config", ["pocketsphinx", "pocketsphinx_fast"])
def test_pocketsphinx_on_synthesized_english(tmp_path, config):
    wavs = []
    for name, text in SENTENCES.items():
        path = tmp_path / f"{name}.wav"
        subprocess.run(
            ["flite", "-voice", "slt", "-t", text, "-o", str(path)], check=True, capture_output=True
        )
        wavs.append(load_audio(path, sample_rate=ASR_SAMPLE_RATE)[0])
    asr = _asr_config(config)
    hyps = asr.transcribe(wavs, language="en")
    stats = [score_utterance(ref, hyp, "en") for ref, hyp in zip(SENTENCES.values(), hyps, strict=True)]
    assert utterance_wer(stats) < 0.8, hyps
    (silence,) = asr.transcribe([SILENCE], language="en")
    assert len(silence.split()) <= 2  # empty-ish: at most a stray short word
    with pytest.raises(ValueError, match="English only"):
        asr.transcribe([SILENCE], language="zh")


def test_pocketsphinx_decoder_options_are_applied_and_checked():
    fast = _asr_config("pocketsphinx_fast")
    assert fast.decoder.config["maxhmmpf"] == 3000 and fast.decoder.config["beam"] == pytest.approx(1e-40)
    assert fast.name == "pocketsphinx(beam=1e-40, maxhmmpf=3000, pbeam=1e-40, wbeam=1e-24)"
    default = PocketSphinxASR()
    assert default.decoder.config["maxhmmpf"] != 3000 and default.name == "pocketsphinx"
    with pytest.raises(ValueError, match=r"unknown PocketSphinx decoder options \['beem'\]; known: .*'beam'"):
        PocketSphinxASR({"beem": 1e-40})
    with pytest.raises(ValueError, match="may not set samprate"):
        PocketSphinxASR({"samprate": 8000})


# --------------------------------------------------------------------------------------------- paraformer
def test_paraformer_without_funasr_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "funasr", None)  # makes `import funasr` raise ImportError
    with pytest.raises(ImportError, match=r"pip install -e \.\[paraformer\]"):
        ParaformerASR(tmp_path)


class _FakeAutoModel:
    """Stands in for funasr.AutoModel: records its arguments, answers in traditional characters."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.inputs = []

    def generate(self, input, batch_size_s):  # FunASR's keyword names
        self.inputs.append((input, batch_size_s))
        return [{"key": "rand_key", "text": "說話"}]


def test_paraformer_path_with_a_fake_funasr(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "funasr", types.SimpleNamespace(AutoModel=_FakeAutoModel))
    zhconv = types.SimpleNamespace(
        convert=lambda text, locale: text.replace("說話", "说话") if locale == "zh-cn" else text
    )
    monkeypatch.setitem(sys.modules, "zhconv", zhconv)
    with pytest.raises(FileNotFoundError, match="Paraformer model folder not found: .*absent"):
        ParaformerASR(tmp_path / "absent")
    asr = ParaformerASR(tmp_path, device="cpu")
    assert asr.model.kwargs == {
        "model": str(tmp_path),
        "device": "cpu",
        "disable_update": True,
        "disable_pbar": True,
    }
    assert asr.transcribe([SILENCE, SILENCE], language="zh-CN") == ["说话", "说话"]
    first_input, batch_size_s = asr.model.inputs[0]
    assert first_input.dtype == np.float32 and first_input.shape == SILENCE.shape and batch_size_s == 300
    with pytest.raises(ValueError, match="Chinese only"):
        asr.transcribe([SILENCE], language="en")


def test_every_backend_is_an_asr_backend():
    for cls in (WhisperASR, PocketSphinxASR, TranscriptsASR, ParaformerASR):
        assert issubclass(cls, ASRBackend)
