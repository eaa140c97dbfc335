"""Resynthesize a folder of wavs through a Flow-VAE checkpoint (encode -> posterior mean -> decode).

python scripts/resynthesize.py ckpt=logs/flow_vae_tiny/checkpoints/last.ckpt \
    in_dir=data/synthetic_tiny/test-synth-en/gt-wavs out_dir=logs/resynth/flow_vae_tiny
python eval/codec_eval.py ref_dir=data/synthetic_tiny/test-synth-en/gt-wavs est_dir=logs/resynth/flow_vae_tiny

Each ``<name>.wav`` becomes ``<out_dir>/<name>.wav`` at the model's sample rate, with the input's length
(the last partial latent frame, under one hop, is decoded from zero padding). Existing outputs are kept,
so an interrupted run resumes (``configs/entry/resynthesize.yaml``).

The quantization floor: with ``codebooks=[512]`` (or ``[512,512]``, residual) the latents are replaced,
``frames_per_code`` frames at a time, by the nearest sum of k-means codes fitted on a latent cache
(``fit_on=cache/latents/<checkpoint>-<hash>``) before decoding. The WER of that output is what tokens of that
size and rate can carry at best with this decoder (docs/main_job_levers.md, "Where the oracle row is lost")::

    python scripts/resynthesize.py ckpt=... in_dir=data/synthetic_tiny/test-synth-en/gt-wavs \
        out_dir=exp/floor_512 codebooks=[512] fit_on=cache/latents/last-<hash>
"""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from speech.audio.io import load_audio, save_audio
from speech.checkpoints import build_model
from speech.data.cache import FeatureCache
from speech.modules.quantizers import fit_residual_kmeans, residual_quantize


def group_frames(latents: torch.Tensor, frames_per_code: int) -> torch.Tensor:
    """``(f, d)`` -> ``(ceil(f / n), n * d)``: ``n`` consecutive frames per row, the last frame repeated to
    fill the last row."""
    pad = (-len(latents)) % frames_per_code
    latents = torch.cat([latents, latents[-1:].expand(pad, -1)]) if pad else latents
    return latents.reshape(-1, frames_per_code * latents.shape[1])


def fit_codebooks(
    fit_on: str, sizes: list[int], frames_per_code: int, iterations: int, seed: int
) -> list[torch.Tensor]:
    """Residual k-means codebooks over groups of ``frames_per_code`` frames of every cut in a latent cache."""
    latents = [torch.from_numpy(a) for a in FeatureCache(fit_on).arrays()]
    if not latents:
        raise FileNotFoundError(f"the latent cache {fit_on} holds no arrays")
    groups = torch.cat([group_frames(z, frames_per_code) for z in latents])
    cuts = len(latents)
    print(f"fitting codebooks {sizes} on {len(groups)} groups of {frames_per_code} frames of {cuts} cuts")
    return fit_residual_kmeans(groups, sizes, iterations, torch.Generator().manual_seed(seed))


@torch.no_grad()
def resynthesize(
    model, audio: np.ndarray, device: torch.device, books: list[torch.Tensor] = (), frames_per_code: int = 2
) -> np.ndarray:
    """One waveform ``(t,)`` -> its reconstruction ``(t,)``, through the codebooks ``books`` if any."""
    hop = model.hop_length
    padded = np.pad(audio, (0, (-len(audio)) % hop))  # whole frames, so the tail is decoded too
    x = torch.from_numpy(padded)[None].to(device)
    latents, latent_lens = model.encode(x, torch.tensor([x.shape[1]], device=device))
    if books:
        frames, dim = latents.shape[1:]
        quantized = residual_quantize(group_frames(latents[0].cpu(), frames_per_code), books)
        latents = quantized.reshape(-1, dim)[None, :frames].to(device)
    return model.decode(latents, latent_lens)[0, : len(audio)].float().cpu().numpy()


def resynthesize_folder(
    ckpt: str,
    in_dir: str,
    out_dir: str,
    device: str = "cpu",
    progress: bool = True,
    *,
    codebooks: list[int] = (),
    fit_on: str | None = None,
    frames_per_code: int = 2,
    kmeans_iterations: int = 25,
    seed: int = 0,
) -> dict:
    """Every ``in_dir/*.wav`` through the Flow-VAE of ``ckpt`` into ``out_dir``; ``{"written", "skipped"}``.
    With ``codebooks``, through k-means codebooks of those sizes fitted on the latent cache ``fit_on``.

    Raises:
        FileNotFoundError: ``in_dir`` holds no wav, or ``fit_on`` no latents.
        ValueError: ``ckpt`` holds another kind of model; ``codebooks`` without ``fit_on``.
    """
    if codebooks and not fit_on:
        raise ValueError("codebooks need fit_on=<a latent cache folder> (cache/latents/<checkpoint>-<hash>)")
    wavs = sorted(Path(in_dir).glob("*.wav"))
    if not wavs:
        raise FileNotFoundError(f"no *.wav in {in_dir}")
    model, cfg = build_model(ckpt)
    if not hasattr(model, "latent_dim"):
        raise ValueError(f"{ckpt} holds a {type(model).__name__}, not a Flow-VAE")
    model.to(torch.device(device))
    books = []
    if codebooks:
        books = fit_codebooks(fit_on, list(codebooks), frames_per_code, kmeans_iterations, seed)
    sample_rate = int(cfg.data.sample_rate)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for path in tqdm(wavs, desc="resynthesize", unit="wav", disable=not progress):
        if (out / path.name).is_file():
            continue
        audio, _ = load_audio(path, sample_rate=sample_rate)
        wav = resynthesize(model, audio, torch.device(device), books, frames_per_code)
        save_audio(out / path.name, wav, sample_rate)
        written += 1
    print(f"{written} resynthesized into {out} ({len(wavs) - written} there before)")
    return {"written": written, "skipped": len(wavs) - written}


@hydra.main(config_path="../configs", config_name="entry/resynthesize", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    return resynthesize_folder(
        cfg.ckpt, cfg.in_dir, cfg.out_dir, device=cfg.device, progress=cfg.progress,
        codebooks=list(cfg.codebooks), fit_on=cfg.fit_on, frames_per_code=cfg.frames_per_code,
        kmeans_iterations=cfg.kmeans_iterations, seed=cfg.seed,
    )  # fmt: skip


if __name__ == "__main__":
    main()
