"""Resynthesize a folder of wavs through a Flow-VAE checkpoint (encode -> posterior mean -> decode).

python scripts/resynthesize.py ckpt=logs/flow_vae_tiny/checkpoints/last.ckpt \
    in_dir=data/synthetic_tiny/test-synth-en/gt-wavs out_dir=logs/resynth/flow_vae_tiny
python eval/codec_eval.py ref_dir=data/synthetic_tiny/test-synth-en/gt-wavs est_dir=logs/resynth/flow_vae_tiny

Each ``<name>.wav`` becomes ``<out_dir>/<name>.wav`` at the model's sample rate, with the input's length
(the last partial latent frame, under one hop, is decoded from zero padding). Existing outputs are kept,
so an interrupted run resumes (``configs/entry/resynthesize.yaml``).
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


@torch.no_grad()
def resynthesize(model, audio: np.ndarray, device: torch.device) -> np.ndarray:
    """One waveform ``(t,)`` -> its reconstruction ``(t,)``."""
    hop = model.hop_length
    padded = np.pad(audio, (0, (-len(audio)) % hop))  # whole frames, so the tail is decoded too
    x = torch.from_numpy(padded)[None].to(device)
    latents, latent_lens = model.encode(x, torch.tensor([x.shape[1]], device=device))
    return model.decode(latents, latent_lens)[0, : len(audio)].float().cpu().numpy()


def resynthesize_folder(
    ckpt: str, in_dir: str, out_dir: str, device: str = "cpu", progress: bool = True
) -> dict:
    """Every ``in_dir/*.wav`` through the Flow-VAE of ``ckpt`` into ``out_dir``; ``{"written", "skipped"}``.

    Raises:
        FileNotFoundError: ``in_dir`` holds no wav.
        ValueError: ``ckpt`` holds another kind of model.
    """
    wavs = sorted(Path(in_dir).glob("*.wav"))
    if not wavs:
        raise FileNotFoundError(f"no *.wav in {in_dir}")
    model, cfg = build_model(ckpt)
    if not hasattr(model, "latent_dim"):
        raise ValueError(f"{ckpt} holds a {type(model).__name__}, not a Flow-VAE")
    model.to(torch.device(device))
    sample_rate = int(cfg.data.sample_rate)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for path in tqdm(wavs, desc="resynthesize", unit="wav", disable=not progress):
        if (out / path.name).is_file():
            continue
        audio, _ = load_audio(path, sample_rate=sample_rate)
        save_audio(out / path.name, resynthesize(model, audio, torch.device(device)), sample_rate)
        written += 1
    print(f"{written} resynthesized into {out} ({len(wavs) - written} there before)")
    return {"written": written, "skipped": len(wavs) - written}


@hydra.main(config_path="../configs", config_name="entry/resynthesize", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    return resynthesize_folder(cfg.ckpt, cfg.in_dir, cfg.out_dir, device=cfg.device, progress=cfg.progress)


if __name__ == "__main__":
    main()
