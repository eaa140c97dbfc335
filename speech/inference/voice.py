"""Voice conditioning from reference audio: speaker vectors (weighted timbre mixes) and one-shot prompts.

Legend: b batch, t samples, f mel frames, k tokens, l latent frames, d latent dim, c speaker dim.

The AR model and flow matching each own a speaker encoder (trained jointly with them), so a voice is a
pair of vectors. A timbre mix (Speech-02 ``timbre_weights``) is the weight-normalized sum of the vectors of
its references. A one-shot prompt is the reference's audio tokens (AR prompt) and its Flow-VAE latents
(flow-matching prompt), cropped to two latent frames per token as in training.

A reference is measured when it is loaded (``check_reference``): one that cannot give a voice is refused
(``AudioError``), one that may give a poor one is used with a warning. The rules are in docs/inference.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import nn

from speech.audio.io import AudioError, load_audio, resample
from speech.inference.request import Reference
from speech.tensors import pad_sequences

# Refused: shorter than this, or a peak below SILENT_PEAK_DBFS (nothing recorded, at most dither).
MIN_REFERENCE_SECONDS = 0.5
SILENT_PEAK_DBFS = -60.0
# Warned: quieter than this (speech is usually recorded at -30 to -15 dBFS RMS), frame levels spread less
# than STEADY_SPREAD_DB (speech rises and falls by 20 dB or more between syllables and pauses: a steady level
# is noise or a tone), or more than CLIPPED_SHARE of the samples at full scale.
QUIET_RMS_DBFS = -40.0
STEADY_SPREAD_DB = 10.0
CLIPPED_SHARE = 0.001
CLIPPED_LEVEL = 0.999  # a sample this close to full scale counts as clipped
FRAME_SECONDS = 0.02  # frames whose levels make the spread (10th to 90th percentile)
# Named when a reference file cannot be read: the common formats this libsndfile reads.
COMMON_FORMATS = [f for f in ("WAV", "FLAC", "OGG", "MP3", "AIFF") if f in sf.available_formats()]
READABLE = (
    f"a reference must be an audio file: {', '.join(COMMON_FORMATS)} or another format libsndfile reads "
    "(soundfile.available_formats())"
)


@dataclass
class Prompt:
    """A one-shot prompt: ``tokens (k,)`` int64 and ``latents (2k, d)``, on the model's device."""

    tokens: torch.Tensor
    latents: torch.Tensor

    def head(self, k: int) -> Prompt:
        """The first ``k`` tokens and their latent frames."""
        frames_per_token = self.latents.shape[0] // max(1, self.tokens.shape[0])
        return Prompt(self.tokens[:k], self.latents[: k * frames_per_token])


def _dbfs(amplitude: np.ndarray | float) -> np.ndarray | float:
    with np.errstate(divide="ignore"):
        return 20 * np.log10(amplitude)


def check_reference(wav: np.ndarray, sample_rate: int) -> list[str]:
    """Measures a loaded reference ``(t,)``: refuses one that cannot give a voice, warns about a poor one.

    Returns:
        Warnings (quiet, steady like noise or a tone, clipped), each with the measured value.

    Raises:
        AudioError: NaN or infinite samples, shorter than ``MIN_REFERENCE_SECONDS``, or silent (peak below
            ``SILENT_PEAK_DBFS``); the message gives the measured value and the limit.
    """
    if not np.isfinite(wav).all():
        raise AudioError("holds NaN or infinite samples")
    seconds = wav.shape[0] / sample_rate
    if seconds < MIN_REFERENCE_SECONDS:
        raise AudioError(f"is {seconds:.3g} s long; a reference needs at least {MIN_REFERENCE_SECONDS} s")
    peak = float(np.abs(wav).max())
    if _dbfs(peak) < SILENT_PEAK_DBFS:
        what = "digital silence (all samples 0)" if peak == 0 else f"a peak of {_dbfs(peak):.1f} dBFS"
        raise AudioError(f"is silent: {what}; a reference needs a peak of at least {SILENT_PEAK_DBFS:g} dBFS")
    warnings = []
    rms = _dbfs(float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))))
    if rms < QUIET_RMS_DBFS:
        warnings.append(
            f"is quiet: {rms:.1f} dBFS RMS (below {QUIET_RMS_DBFS:g}); the voice may not come through"
        )
    frame = int(FRAME_SECONDS * sample_rate)
    frames = wav[: wav.shape[0] // frame * frame].reshape(-1, frame).astype(np.float64)
    levels = _dbfs(np.maximum(np.sqrt(np.mean(frames**2, axis=1)), np.finfo(np.float64).tiny))  # no log(0)
    spread = float(np.percentile(levels, 90) - np.percentile(levels, 10))
    if spread < STEADY_SPREAD_DB:
        warnings.append(
            f"has a steady level ({spread:.1f} dB between its quiet and loud {1000 * FRAME_SECONDS:g} ms "
            f"frames; speech has {STEADY_SPREAD_DB:g} or more): noise or a tone rather than speech?"
        )
    clipped = float(np.mean(np.abs(wav) >= CLIPPED_LEVEL))
    if clipped > CLIPPED_SHARE:
        warnings.append(f"is clipped: {100 * clipped:.1f} % of its samples are at full scale")
    return warnings


def load_reference(
    reference: Reference, sample_rate: int, reference_sample_rate: int | None = None
) -> np.ndarray:
    """A reference as mono float32 ``(t,)`` at ``sample_rate``.

    Args:
        reference: A path to any file soundfile reads, or a mono array.
        sample_rate: The models' rate.
        reference_sample_rate: Rate of an array reference (``None``: already ``sample_rate``).

    Raises:
        AudioError: a file that is missing, empty or not audio (the message names the readable formats).
    """
    if isinstance(reference, (str, Path)):
        return _read(Path(reference), sample_rate)
    wav = np.asarray(reference, dtype=np.float32)
    return resample(wav, reference_sample_rate or sample_rate, sample_rate)


def _read(path: Path, sample_rate: int) -> np.ndarray:
    """A reference file as mono float32 at ``sample_rate``; an unreadable one is named with the formats a
    reference may have."""
    try:
        return load_audio(path, sample_rate=sample_rate)[0]
    except AudioError as err:
        if path.is_file() and path.stat().st_size == 0:
            raise AudioError(f"{path}: an empty file (0 bytes); {READABLE}") from err
        if isinstance(err.__cause__, (RuntimeError, sf.LibsndfileError)):  # libsndfile could not read it
            raise AudioError(f"{err}; {READABLE}") from err
        raise


def pad_audio(wavs: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mono waveforms -> ``(audio (b, t), audio_lens (b,))`` on ``device``."""
    audio, lens, _ = pad_sequences([torch.from_numpy(w) for w in wavs])
    return audio.to(device), lens.to(device)


class VoiceEncoder:
    """Turns reference waveforms into speaker vectors and prompts with the pipeline's models.

    Args:
        mel: The log-mel front end the models were trained with (``cfg.data.mel``).
        ar_speaker, fm_speaker: ``(mel (b, f, m), mel_lens (b,)) -> (b, c)``: the AR model's and the flow
            matching model's ``speaker_vector``; ``ar_speaker`` may be ``None`` where only flow matching's
            vectors are asked for (:meth:`fm_vectors`: the ceiling rows, which run no AR model).
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
        ar_speaker: Callable | None,
        fm_speaker: Callable,
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

    @property
    def token_rate(self) -> float:
        """Audio tokens per second (25 Hz): a token is ``frames_per_token`` latent frames of the Flow-VAE."""
        return self.sample_rate / (self.frames_per_token * self.flow_vae.hop_length)

    @torch.inference_mode()
    def speakers(self, voices: list[list[tuple[np.ndarray, float]]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Speaker vectors of ``b`` voices, each a weighted mix of one or more references.

        Args:
            voices: Per voice, ``(waveform (t,), weight)`` pairs.

        Returns:
            ``(ar (b, c_ar), fm (b, c_fm))``.
        """
        ar, fm = self.reference_vectors([w for voice in voices for w, _ in voice])
        weights = torch.tensor([w for voice in voices for _, w in voice], device=ar.device)
        owner = torch.tensor([i for i, voice in enumerate(voices) for _ in voice], device=ar.device)
        mix = [_weighted_mean(vectors, weights, owner, len(voices)) for vectors in (ar, fm)]
        return mix[0], mix[1]

    @torch.inference_mode()
    def reference_vectors(self, wavs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """The speaker vectors of each reference ``(t,)`` alone: ``(ar (r, c_ar), fm (r, c_fm))``."""
        if self.ar_speaker is None:
            raise ValueError("this VoiceEncoder has no AR speaker encoder: it gives flow matching's only")
        return self.ar_speaker(*self._mel(wavs, self.max_reference_seconds[0])), self.fm_vectors(wavs)

    @torch.inference_mode()
    def fm_vectors(self, wavs: list[np.ndarray]) -> torch.Tensor:
        """Flow matching's speaker vectors ``(r, c_fm)`` of each reference ``(t,)`` alone."""
        return self.fm_speaker(*self._mel(wavs, self.max_reference_seconds[1]))

    def _mel(self, wavs: list[np.ndarray], seconds: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel ``(b, f, m)`` and ``mel_lens (b,)`` of the first ``seconds`` of each waveform."""
        if seconds is not None:
            wavs = [w[: int(seconds * self.sample_rate)] for w in wavs]
        return self.mel(*pad_audio(wavs, self.mel.mel_basis.device))

    @torch.inference_mode()
    def tokens(self, wavs: list[np.ndarray]) -> list[torch.Tensor]:
        """The audio tokens ``(k_i,)`` int64 of whole waveforms."""
        audio, audio_lens = pad_audio(wavs, self.mel.mel_basis.device)
        return self._tokens(audio, audio_lens)

    def _tokens(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> list[torch.Tensor]:
        tokens, token_lens = self.audio_tokenizer.encode(*self.mel(audio, audio_lens))
        return [tokens[row, :n] for row, n in enumerate(token_lens.tolist())]

    @torch.inference_mode()
    def prompts(self, wavs: list[np.ndarray]) -> list[Prompt]:
        """One-shot prompts of whole reference waveforms: their tokens and matching latents."""
        audio, audio_lens = pad_audio(wavs, self.mel.mel_basis.device)
        latents, _ = self.flow_vae.encode(audio, audio_lens)
        out = []
        for row, row_tokens in enumerate(self._tokens(audio, audio_lens)):
            frames = len(row_tokens) * self.frames_per_token
            lat = latents[row, :frames]
            # Latents may be a frame short of two per token (data contract: crop/pad to 2 * tokens).
            if lat.shape[0] < frames:
                lat = torch.cat([lat, lat[-1:].expand(frames - lat.shape[0], -1)])
            out.append(Prompt(row_tokens, lat))
        return out


def _weighted_mean(vectors: torch.Tensor, weights: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """``(r, c)`` vectors of references -> ``(n, c)``: per owner, the weight-normalized sum."""
    total = torch.zeros(n, vectors.shape[1], device=vectors.device, dtype=vectors.dtype)
    total.index_add_(0, owner, vectors * weights[:, None].to(vectors.dtype))
    norm = torch.zeros(n, device=vectors.device, dtype=vectors.dtype).index_add_(
        0, owner, weights.to(vectors.dtype)
    )
    return total / norm[:, None]
