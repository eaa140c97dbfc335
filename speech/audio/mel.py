"""Log-mel spectrogram in torch, usable on CPU or GPU inside a training step.

Legend: b batch, t samples, f frames, m mel bins.
"""

from __future__ import annotations

import librosa
import torch
from torch import nn

from speech.tensors import lengths_to_mask


class LogMelSpectrogram(nn.Module):
    """Waveform -> natural-log mel spectrogram with exactly ``t // hop_length`` frames.

    Each row is reflect-padded by ``(n_fft - hop_length) / 2`` at its start and at its own end (not the
    batch's), then framed without centering. So padding a batch never changes valid frames, frame ``i``
    is centred on sample ``i * hop + hop / 2``, and lengths map as ``mel_lens = audio_lens // hop_length``
    (a 25 Hz token at hop 160 and 16 kHz covers 4 frames).

    Args:
        sample_rate: Audio sample rate in Hz.
        n_fft: FFT size.
        win_length: Hann window length (<= n_fft).
        hop_length: Frame shift in samples.
        n_mels: Number of mel bins.
        f_min: Lowest mel filter edge, Hz.
        f_max: Highest mel filter edge, Hz; ``None`` means ``sample_rate / 2``.
        log_floor: Magnitudes are clamped to this before the log.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        win_length: int = 640,
        hop_length: int = 160,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float | None = None,
        log_floor: float = 1e-5,
    ) -> None:
        super().__init__()
        if win_length > n_fft:
            raise ValueError(f"win_length ({win_length}) must not exceed n_fft ({n_fft})")
        if (n_fft - hop_length) % 2:
            raise ValueError(
                f"n_fft - hop_length must be even for symmetric padding, got {n_fft} - {hop_length}"
            )
        self.sample_rate, self.n_fft, self.win_length, self.hop_length = (
            sample_rate,
            n_fft,
            win_length,
            hop_length,
        )
        self.n_mels, self.log_floor = n_mels, log_floor
        fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max)
        self.register_buffer("mel_basis", torch.from_numpy(fb).float(), persistent=False)  # (m, n_fft/2+1)
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

    def frames(self, audio_lens: torch.Tensor) -> torch.Tensor:
        """Number of valid mel frames for each audio length."""
        return torch.div(audio_lens, self.hop_length, rounding_mode="floor")

    def _reflect_pad(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> torch.Tensor:
        """Reflect-pads every row at its own end, so valid frames never see another row's padding."""
        pad = (self.n_fft - self.hop_length) // 2
        pos = torch.arange(-pad, audio.shape[1] + pad, device=audio.device)[None]  # (1, t + 2 pad)
        last = (audio_lens.clamp(min=1) - 1)[:, None]
        idx = torch.where(pos < 0, -pos, pos)
        idx = torch.where(idx > last, 2 * last - idx, idx).clamp(min=0)
        idx = torch.minimum(idx, last)
        return torch.gather(audio, 1, idx)

    def forward(self, audio: torch.Tensor, audio_lens: torch.Tensor | None = None):
        """Computes log-mels.

        Args:
            audio: ``(b, t)`` waveform in [-1, 1].
            audio_lens: ``(b,)`` valid samples per row, or ``None`` when nothing is padded.

        Returns:
            ``(mel, mel_lens)``: ``(b, f, m)`` log-mel with ``f = t // hop_length`` and ``(b,)`` frame counts;
            frames past ``mel_lens`` are set to ``log(log_floor)``.
        """
        if audio.dim() != 2:
            raise ValueError(f"audio must be (batch, samples), got shape {tuple(audio.shape)}")
        if audio_lens is None:
            audio_lens = torch.full((audio.shape[0],), audio.shape[1], device=audio.device)
        x = self._reflect_pad(audio.float(), audio_lens)
        spec = torch.stft(
            x,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=False,
            return_complex=True,
        )
        mag = spec.abs()  # (b, n_fft/2+1, f)
        mel = torch.log(torch.clamp(self.mel_basis @ mag, min=self.log_floor)).transpose(1, 2)
        mel = mel[:, : audio.shape[1] // self.hop_length]
        mel_lens = self.frames(audio_lens)
        valid = lengths_to_mask(mel_lens, mel.shape[1])
        mel = mel.masked_fill(~valid[..., None], torch.log(torch.tensor(self.log_floor)).item())
        return mel, mel_lens
