"""Voice conditioning from reference audio: speaker vectors (weighted timbre mixes) and one-shot prompts.

Legend: b batch, t samples, f mel frames, k tokens, l latent frames, d latent dim, c speaker dim.

The AR model and flow matching each own a speaker encoder (trained jointly with them), so a voice is a
pair of vectors. A timbre mix (Speech-02 ``timbre_weights``) is the weight-normalized sum of the vectors of
its references. A one-shot prompt is the reference's audio tokens (AR prompt) and its Flow-VAE latents
(flow-matching prompt), cropped to two latent frames per token as in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from speech.audio.io import load_audio, resample
from speech.data.collate import pad_sequences
from speech.inference.request import Reference


@dataclass
class Prompt:
    """A one-shot prompt: ``tokens (k,)`` int64 and ``latents (2k, d)``, on the model's device."""

    tokens: torch.Tensor
    latents: torch.Tensor


def load_reference(
    reference: Reference, sample_rate: int, reference_sample_rate: int | None = None
) -> np.ndarray:
    """A reference as mono float32 ``(t,)`` at ``sample_rate``.

    Args:
        reference: A path to any file soundfile reads, or a mono array.
        sample_rate: The models' rate.
        reference_sample_rate: Rate of an array reference (``None``: already ``sample_rate``).
    """
    if isinstance(reference, (str, Path)):
        return load_audio(reference, sample_rate=sample_rate)[0]
    wav = np.asarray(reference, dtype=np.float32)
    return resample(wav, reference_sample_rate or sample_rate, sample_rate)


def pad_audio(wavs: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mono waveforms -> ``(audio (b, t), audio_lens (b,))`` on ``device``."""
    audio, lens, _ = pad_sequences([torch.from_numpy(w) for w in wavs])
    return audio.to(device), lens.to(device)


class VoiceEncoder:
    """Turns reference waveforms into speaker vectors and prompts with the pipeline's models.

    Args:
        mel: The log-mel front end the models were trained with (``cfg.data.mel``).
        ar_speaker, fm_speaker: ``(mel (b, f, m), mel_lens (b,)) -> (b, c)``: the AR model's and the flow
            matching model's ``speaker_vector``.
        audio_tokenizer: ``AudioTokenizer`` (``encode(mel, mel_lens) -> (tokens, token_lens)``).
        flow_vae: ``FlowVAE`` (``encode(audio, audio_lens) -> (latents, latent_lens)``).
        frames_per_token: Latent frames per audio token (50 Hz / 25 Hz = 2).
        max_reference_seconds: ``(AR, flow matching)``: each speaker encoder reads the first this many
            seconds of a reference (the length of the crops it was trained on,
            ``data.datamodule.max_ref_duration``); ``None`` reads it whole. Prompts use the whole reference.
    """

    def __init__(
        self,
        mel: nn.Module,
        ar_speaker,
        fm_speaker,
        audio_tokenizer: nn.Module,
        flow_vae: nn.Module,
        *,
        frames_per_token: int = 2,
        max_reference_seconds: tuple[float | None, float | None] = (None, None),
    ) -> None:
        self.mel, self.ar_speaker, self.fm_speaker = mel, ar_speaker, fm_speaker
        self.audio_tokenizer, self.flow_vae = audio_tokenizer, flow_vae
        self.frames_per_token, self.max_reference_seconds = frames_per_token, max_reference_seconds

    @property
    def sample_rate(self) -> int:
        return int(self.mel.sample_rate)

    @torch.inference_mode()
    def speakers(self, voices: list[list[tuple[np.ndarray, float]]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Speaker vectors of ``b`` voices, each a weighted mix of one or more references.

        Args:
            voices: Per voice, ``(waveform (t,), weight)`` pairs.

        Returns:
            ``(ar (b, c_ar), fm (b, c_fm))``.
        """
        wavs = [w for voice in voices for w, _ in voice]
        ar_seconds, fm_seconds = self.max_reference_seconds
        ar = self.ar_speaker(*self._mel(wavs, ar_seconds))
        fm = self.fm_speaker(*self._mel(wavs, fm_seconds))
        weights = torch.tensor([w for voice in voices for _, w in voice], device=ar.device)
        owner = torch.tensor([i for i, voice in enumerate(voices) for _ in voice], device=ar.device)
        mix = [_weighted_mean(vectors, weights, owner, len(voices)) for vectors in (ar, fm)]
        return mix[0], mix[1]

    def _mel(self, wavs: list[np.ndarray], seconds: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel ``(b, f, m)`` and ``mel_lens (b,)`` of the first ``seconds`` of each waveform."""
        if seconds is not None:
            wavs = [w[: int(seconds * self.sample_rate)] for w in wavs]
        return self.mel(*pad_audio(wavs, self.mel.mel_basis.device))

    @torch.inference_mode()
    def prompts(self, wavs: list[np.ndarray]) -> list[Prompt]:
        """One-shot prompts of whole reference waveforms: their tokens and matching latents."""
        device = self.mel.mel_basis.device
        audio, audio_lens = pad_audio(wavs, device)
        tokens, token_lens = self.audio_tokenizer.encode(*self.mel(audio, audio_lens))
        latents, _ = self.flow_vae.encode(audio, audio_lens)
        out = []
        for row, n in enumerate(token_lens.tolist()):
            frames = n * self.frames_per_token
            lat = latents[row, :frames]
            # Latents may be a frame short of two per token (data contract: crop/pad to 2 * tokens).
            if lat.shape[0] < frames:
                lat = torch.cat([lat, lat[-1:].expand(frames - lat.shape[0], -1)])
            out.append(Prompt(tokens[row, :n], lat))
        return out


def _weighted_mean(vectors: torch.Tensor, weights: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """``(r, c)`` vectors of references -> ``(n, c)``: per owner, the weight-normalized sum."""
    total = torch.zeros(n, vectors.shape[1], device=vectors.device, dtype=vectors.dtype)
    total.index_add_(0, owner, vectors * weights[:, None].to(vectors.dtype))
    norm = torch.zeros(n, device=vectors.device, dtype=vectors.dtype).index_add_(
        0, owner, weights.to(vectors.dtype)
    )
    return total / norm[:, None]
