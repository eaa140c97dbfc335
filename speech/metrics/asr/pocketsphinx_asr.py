"""PocketSphinx with the US-English model that ships inside its PyPI wheel: the offline default for en.

Far weaker than Whisper-large-v3 (the protocol's English ASR), so its WERs are not comparable with
published numbers; it needs no download, which makes it the default for smoke runs and CI.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from speech.metrics.asr.base import ASR_SAMPLE_RATE, ASRBackend
from speech.text.normalize import base_language

_INT16_MAX = 32767


def _to_pcm16(wav: np.ndarray) -> bytes:
    """Float waveform in [-1, 1] -> little-endian 16-bit PCM bytes, as the decoder reads them."""
    pcm = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0) * _INT16_MAX
    return pcm.astype("<i2").tobytes()


class PocketSphinxASR(ASRBackend):
    """English transcription with PocketSphinx's packaged acoustic model, language model and dictionary.

    Each utterance is decoded on its own in one ``process_raw(full_utt=True)`` call. Transcripts are
    lower-case words; silence or unintelligible audio gives ``""`` or a few short words.

    Args:
        decoder_options: Extra PocketSphinx decoder options (e.g. ``{"beam": 1e-40}``), passed to
            ``pocketsphinx.Decoder``; empty = its defaults. ``configs/asr/pocketsphinx_fast.yaml`` holds the
            narrower search the main job uses (docs/evaluation.md).
    """

    name = "pocketsphinx"
    languages = frozenset({"en"})

    def __init__(self, decoder_options: dict | None = None) -> None:
        from pocketsphinx import Config, Decoder  # imported here: the native library loads only when used

        options = dict(decoder_options or {})
        if {"samprate", "loglevel"} & options.keys():
            raise ValueError("decoder_options may not set samprate or loglevel (the backend sets them)")
        known = {arg.name for arg in Config().describe()}
        if unknown := sorted(options.keys() - known):
            raise ValueError(f"unknown PocketSphinx decoder options {unknown}; known: {sorted(known)}")
        self.decoder = Decoder(samprate=ASR_SAMPLE_RATE, loglevel="FATAL", **options)
        if options:  # the name goes into every summary: runs scored with another search must not look alike
            self.name = f"pocketsphinx({', '.join(f'{k}={v}' for k, v in sorted(options.items()))})"

    def _decode(self, wav: np.ndarray) -> str:
        self.decoder.start_utt()
        self.decoder.process_raw(_to_pcm16(wav), no_search=False, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr.strip() if hyp is not None else ""

    def transcribe(
        self, wavs: Sequence[np.ndarray], *, language: str, utts: Sequence[str] | None = None
    ) -> list[str]:
        """Transcribes each 16 kHz waveform in turn (``language`` must be ``en``; ``utts`` is unused).

        Raises:
            ValueError: ``language`` is not English.
        """
        if not self.supports(base_language(language)):
            raise ValueError(
                f"{self.name} transcribes English only (its packaged model), got language {language!r}"
            )
        return [self._decode(w) for w in wavs]
