"""Resemblyzer (GE2E d-vector) speaker embeddings: the offline default SIM backend.

The weights ship inside the ``resemblyzer`` PyPI package, so this backend needs no download. It is *not* the
Seed-TTS-eval model (that is ``wavlm_ecapa``): its SIM values are on a different scale and only comparable
with each other.
"""

from __future__ import annotations

import warnings

import numpy as np

from speech.metrics.speaker.base import SpeakerEmbedder


class ResemblyzerEmbedder(SpeakerEmbedder):
    """256-d L2-normalized d-vectors from resemblyzer's ``VoiceEncoder``.

    Preprocessing is resemblyzer's own ``preprocess_wav`` minus its resampling (input is already 16 kHz), the
    condition its encoder was trained under: the volume is raised (never lowered) to -30 dBFS, then webrtcvad
    (mode 3, 30 ms windows, smoothed) keeps each voiced region plus ~90 ms on either side, so leading and
    trailing silence is cut and pauses longer than ~0.2 s shrink to ~0.2 s. Unlike
    the protocol's WavLM model this does trim silence; ``trim_silence=False`` keeps the full length (volume
    still normalized). If the VAD finds no speech at all, the untrimmed audio is embedded rather than nothing.
    The utterance embedding is resemblyzer's mean of 1.6 s partial embeddings, renormalized.

    Args:
        device: Torch device for the encoder.
        trim_silence: Apply the VAD trimming described above.
    """

    name = "resemblyzer"

    def __init__(self, *, device: str = "cpu", trim_silence: bool = True) -> None:
        with warnings.catch_warnings():  # webrtcvad imports the deprecated pkg_resources (setuptools < 81)
            warnings.simplefilter("ignore", UserWarning)
            from resemblyzer import VoiceEncoder, audio

        self._audio = audio
        self.encoder = VoiceEncoder(device=device, verbose=False)
        self.trim_silence = trim_silence

    def preprocess(self, wav: np.ndarray) -> np.ndarray:
        """Volume normalization and optional VAD trimming of a 16 kHz waveform ``(t,)``."""
        wav = np.asarray(wav, dtype=np.float32).reshape(-1)
        if wav.size == 0:
            raise ValueError("cannot embed an empty waveform")
        if np.any(wav):  # the dBFS of digital silence is -inf; leave it as it is
            wav = self._audio.normalize_volume(wav, self._audio.audio_norm_target_dBFS, increase_only=True)
        if self.trim_silence:
            trimmed = self._audio.trim_long_silences(wav)
            wav = trimmed if trimmed.size else wav
        return wav.astype(np.float32, copy=False)

    def embed(self, wav: np.ndarray) -> np.ndarray:
        """Embeds a float waveform ``(t,)`` at 16 kHz (resemblyzer's fixed rate, = ``SIM_SAMPLE_RATE``).

        Returns:
            ``(256,)`` float32 of unit norm.
        """
        return self.encoder.embed_utterance(self.preprocess(wav)).astype(np.float32)
