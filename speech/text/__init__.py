"""Text: the synthesis front-end (normalization, pause markers ``<#x#>``, the multilingual byte-level BPE
tokenizer), the CTC byte vocabulary and the WER scoring normalizer (``wer_norm``)."""

from speech.text.bpe import PAD_ID, TextTokenizer
from speech.text.normalize import base_language, normalize_text
from speech.text.pauses import Pause, PauseMarkerError, TextSegment, parse_pauses

__all__ = [
    "PAD_ID",
    "Pause",
    "PauseMarkerError",
    "TextSegment",
    "TextTokenizer",
    "base_language",
    "normalize_text",
    "parse_pauses",
]
