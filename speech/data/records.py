"""The record every corpus recipe produces before it becomes a Lhotse cut."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Utterance:
    """One transcribed utterance of one speaker.

    Attributes:
        id: Corpus-unique utterance id (becomes the Lhotse cut id).
        audio_path: Audio file holding the utterance.
        text: Transcript exactly as spoken (before text normalization by the front-end).
        speaker: Corpus-unique speaker id.
        language: Language code (ISO 639-1 where one exists: ``en``, ``de``, ``zh``, ``ja`` ...).
        start: Offset of the utterance in the file, seconds (segments of long files, as in Emilia).
        duration: Length in seconds, or ``None`` for "the whole file from ``start``".
        emotion: Acted emotion label (``speech.data.synthetic.emotions.STYLES``: ``"neutral"``,
            ``"happy"``, ...) for corpora that have one, e.g. the synthetic corpus's emotive renditions;
            ``None`` when the corpus does not label emotion. It travels on the cut's supervision
            (:func:`speech.data.manifest.cut_emotion`).
    """

    id: str
    audio_path: Path
    text: str
    speaker: str
    language: str
    start: float = 0.0
    duration: float | None = None
    emotion: str | None = None
