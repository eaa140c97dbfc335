"""Resynthesize a folder of wavs through a Flow-VAE checkpoint (encode -> posterior mean -> decode).

python scripts/resynthesize.py --ckpt logs/flow_vae_tiny/checkpoints/last.ckpt \
    --in-dir data/synthetic_tiny/test-synth-en/gt-wavs --out-dir logs/resynth/flow_vae_tiny
python eval/codec_eval.py ref_dir=data/synthetic_tiny/test-synth-en/gt-wavs est_dir=logs/resynth/flow_vae_tiny

Each ``<name>.wav`` becomes ``<out-dir>/<name>.wav`` at the model's sample rate, with the input's length
(the last partial latent frame, under one hop, is decoded from zero padding). Existing outputs are kept,
so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, help="a Flow-VAE checkpoint written by train.py")
    parser.add_argument("--in-dir", required=True, help="folder of *.wav")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    wavs = sorted(Path(args.in_dir).glob("*.wav"))
    if not wavs:
        raise FileNotFoundError(f"no *.wav in {args.in_dir}")
    model, cfg = build_model(args.ckpt)
    if not hasattr(model, "latent_dim"):
        raise ValueError(f"{args.ckpt} holds a {type(model).__name__}, not a Flow-VAE")
    device = torch.device(args.device)
    model.to(device)
    sample_rate = int(cfg.data.sample_rate)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for path in tqdm(wavs, desc="resynthesize", unit="wav", disable=args.no_progress):
        if (out_dir / path.name).is_file():
            continue
        audio, _ = load_audio(path, sample_rate=sample_rate)
        save_audio(out_dir / path.name, resynthesize(model, audio, device), sample_rate)
        written += 1
    print(f"{written} resynthesized into {out_dir} ({len(wavs) - written} there before)")
    return {"written": written, "skipped": len(wavs) - written}


if __name__ == "__main__":
    main()
