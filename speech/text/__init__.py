"""Text: the synthesis front-end (normalization, pause markers ``<#x#>``, the multilingual byte-level BPE
``TextBPE``), the CTC byte vocabulary and the WER scoring normalizer (``wer_norm``)."""

from speech.text.bpe import PAD_ID, TextBPE
from speech.text.normalize import base_language, normalize_text
from speech.text.pauses import Pause, PauseMarkerError, TextSegment, parse_pauses

__all__ = [
    "PAD_ID",
    "Pause",
    "PauseMarkerError",
    "TextBPE",
    "TextSegment",
    "base_language",
    "normalize_text",
    "parse_pauses",
]
