"""Text front-end: normalization, pause markers ``<#x#>`` and the multilingual byte-level BPE tokenizer."""

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
