"""The contract every ASR backend meets."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

ASR_SAMPLE_RATE = 16000


class ASRBackend(ABC):
    """Transcribes 16 kHz mono audio.

    Backends load their model in ``__init__`` from local files only (no downloads) and raise
    ``FileNotFoundError`` naming the missing path. ``languages`` lists the base language codes a backend can
    transcribe (``None`` = any).
    """

    name: str = "asr"
    languages: frozenset[str] | None = None

    @abstractmethod
    def transcribe(
        self, wavs: Sequence[np.ndarray], *, language: str, utts: Sequence[str] | None = None
    ) -> list[str]:
        """Transcribes a batch.

        Args:
            wavs: Float32 waveforms of shape ``(t,)`` at ``ASR_SAMPLE_RATE``.
            language: Base language code (``en``, ``zh``, ...) of all items.
            utts: Utterance ids of the items (backends that look transcripts up by id need them).

        Returns:
            One raw transcript per input (scoring normalizes them).
        """

    def supports(self, language: str) -> bool:
        return self.languages is None or language in self.languages
