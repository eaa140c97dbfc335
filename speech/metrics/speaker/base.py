"""The contract every speaker-embedding backend meets."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

SIM_SAMPLE_RATE = 16000


class SpeakerEmbedder(ABC):
    """Maps 16 kHz mono audio to a speaker embedding; SIM is the cosine of two embeddings."""

    name: str = "speaker"

    @abstractmethod
    def embed(self, wav: np.ndarray) -> np.ndarray:
        """Embeds one float32 waveform of shape ``(t,)`` at ``SIM_SAMPLE_RATE``; returns shape ``(d,)``."""

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        """Cosine similarity between the embeddings of two waveforms."""
        ea, eb = self.embed(a), self.embed(b)
        return float(np.dot(ea, eb) / (np.linalg.norm(ea) * np.linalg.norm(eb) + 1e-12))
