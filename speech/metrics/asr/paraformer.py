"""Paraformer-zh through FunASR's ``AutoModel``, loaded from a local folder: the protocol's Chinese ASR.

Seed-TTS-eval calls ``AutoModel(model="paraformer-zh").generate(input=wav_path, batch_size_s=300)`` with no
VAD or punctuation model, one file at a time, and converts the text to simplified Chinese with
``zhconv.convert(text, "zh-cn")``. This backend does the same on in-memory 16 kHz waveforms. FunASR is an
optional extra (``pip install -e .[paraformer]``); zhconv is used when installed, and its absence is
logged once (Paraformer-zh already writes simplified characters, so the conversion rarely changes text).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from speech.metrics.asr.base import ASRBackend
from speech.text.normalize import base_language

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -e .[paraformer]"


def _import_auto_model():
    try:
        from funasr import AutoModel
    except ImportError as err:
        raise ImportError(
            f"ParaformerASR needs FunASR, an optional dependency; install it with `{INSTALL_HINT}`"
        ) from err
    return AutoModel


def simplified_chinese_converter() -> Callable[[str], str]:
    """``zhconv.convert(text, "zh-cn")`` when zhconv is installed, else the identity (with a warning)."""
    try:
        import zhconv
    except ImportError:
        log.warning("zhconv is not installed: Paraformer output is not converted to simplified Chinese")
        return lambda text: text
    return lambda text: zhconv.convert(text, "zh-cn")


def _default_device() -> str:
    return "cuda:0" if torch.cuda.is_available() else "cpu"


class ParaformerASR(ASRBackend):
    """Chinese transcription with a local Paraformer checkpoint folder (e.g. a ``paraformer-zh`` snapshot).

    Args:
        model_dir: Folder with FunASR's ``config.yaml``, ``model.pt`` and token files. Nothing is
            downloaded (``disable_update=True``, and a missing folder fails before FunASR sees it).
        device: ``"cuda:0"``, ``"cpu"``, ...; ``None`` picks CUDA when available.
        batch_size_s: FunASR's dynamic batch size in seconds of audio (the protocol's 300).

    Raises:
        ImportError: FunASR is not installed; the message says how to install it.
        FileNotFoundError: ``model_dir`` is not a folder.
    """

    name = "paraformer"
    languages = frozenset({"zh"})

    def __init__(self, model_dir: str | Path, *, device: str | None = None, batch_size_s: int = 300) -> None:
        auto_model = _import_auto_model()
        path = Path(model_dir)
        if not path.is_dir():
            raise FileNotFoundError(
                f"Paraformer model folder not found: {path} (download e.g. funasr/paraformer-zh there first; "
                "nothing is downloaded at evaluation time)"
            )
        self.batch_size_s = batch_size_s
        self.model = auto_model(
            model=str(path), device=device or _default_device(), disable_update=True, disable_pbar=True
        )
        self.to_simplified = simplified_chinese_converter()

    def _decode(self, wav: np.ndarray) -> str:
        result = self.model.generate(
            input=np.asarray(wav, dtype=np.float32).reshape(-1), batch_size_s=self.batch_size_s
        )
        text = result[0]["text"] if result else ""
        return self.to_simplified(text).strip()

    def transcribe(
        self, wavs: Sequence[np.ndarray], *, language: str, utts: Sequence[str] | None = None
    ) -> list[str]:
        """Transcribes each 16 kHz waveform on its own, as the protocol does (``utts`` is unused).

        Raises:
            ValueError: ``language`` is not Chinese.
        """
        if not self.supports(base_language(language)):
            raise ValueError(f"{self.name} transcribes Chinese only, got language {language!r}")
        return [self._decode(w) for w in wavs]
