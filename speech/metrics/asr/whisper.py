"""Whisper through HF transformers, loaded from a local folder: the protocol's English ASR.

Seed-TTS-eval transcribes test-en with ``openai/whisper-large-v3``, language forced to English, task
``transcribe``, default ``generate()`` decoding, one file at a time. Here the language is forced from the
``language`` argument and items are batched; every item is padded to Whisper's 30 s window either way, so
batching changes nothing but speed. Audio longer than 30 s is truncated by the feature extractor, as in
the protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from speech.metrics.asr.base import ASR_SAMPLE_RATE, ASRBackend
from speech.text.normalize import base_language


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class WhisperASR(ASRBackend):
    """Batched Whisper transcription from a ``save_pretrained`` folder (model + processor files).

    Args:
        model_dir: Folder holding ``config.json``, the weights, ``generation_config.json`` and the
            processor files (e.g. a snapshot of ``openai/whisper-large-v3``). Nothing is downloaded.
        batch_size: Items per ``generate`` call.
        device: ``"cuda"``, ``"cpu"``, ...; ``None`` picks CUDA when available.
        dtype: Weight dtype name (``"float32"``, ``"float16"``, ``"bfloat16"``).
        max_new_tokens: Cap on generated tokens; ``None`` keeps the model's generation config.

    Raises:
        FileNotFoundError: ``model_dir`` is not a folder.
    """

    name = "whisper"
    languages = None

    def __init__(
        self,
        model_dir: str | Path,
        *,
        batch_size: int = 16,
        device: str | None = None,
        dtype: str = "float32",
        max_new_tokens: int | None = None,
    ) -> None:
        path = Path(model_dir)
        if not path.is_dir():
            raise FileNotFoundError(
                f"Whisper model folder not found: {path} (save e.g. openai/whisper-large-v3 there with "
                "save_pretrained or huggingface-cli download; nothing is downloaded at evaluation time)"
            )
        try:  # imported here: transformers is slow to import and only this backend needs it
            from transformers import WhisperForConditionalGeneration, WhisperProcessor
        except ImportError as err:
            raise ImportError("WhisperASR needs HF transformers: pip install transformers") from err

        self.batch_size = batch_size
        self.device = device or _default_device()
        self.dtype = getattr(torch, dtype)
        self.max_new_tokens = max_new_tokens
        self.processor = WhisperProcessor.from_pretrained(path, local_files_only=True)
        model = WhisperForConditionalGeneration.from_pretrained(path, local_files_only=True, dtype=self.dtype)
        self.model = model.to(self.device).eval()

    def _transcribe_batch(self, wavs: Sequence[np.ndarray], language: str) -> list[str]:
        inputs = self.processor.feature_extractor(
            [np.asarray(w, dtype=np.float32).reshape(-1) for w in wavs],
            sampling_rate=ASR_SAMPLE_RATE,
            return_tensors="pt",
            return_attention_mask=True,
        )
        kwargs = {} if self.max_new_tokens is None else {"max_new_tokens": self.max_new_tokens}
        with torch.inference_mode():
            ids = self.model.generate(
                inputs.input_features.to(self.device, self.dtype),
                attention_mask=inputs.attention_mask.to(self.device),
                language=language,
                task="transcribe",
                **kwargs,
            )
        return [t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)]

    def transcribe(
        self, wavs: Sequence[np.ndarray], *, language: str, utts: Sequence[str] | None = None
    ) -> list[str]:
        """Transcribes 16 kHz waveforms in batches of ``batch_size`` (``utts`` is unused).

        Args:
            wavs: Float32 waveforms of shape ``(t,)``.
            language: Language code; its base (``en``, ``zh``, ...) is forced as Whisper's language token.
            utts: Ignored.

        Returns:
            One stripped transcript per waveform, special tokens removed.
        """
        lang = base_language(language)
        out: list[str] = []
        for start in range(0, len(wavs), self.batch_size):
            out.extend(self._transcribe_batch(wavs[start : start + self.batch_size], lang))
        return out
