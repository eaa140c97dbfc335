"""Encode every train + val cut of a prepared corpus into Flow-VAE latents, cached for flow matching.

python scripts/encode_latents.py kind=latents ckpt=logs/flow_vae_tiny/checkpoints/last.ckpt [data=...]

Uses ``configs/encode.yaml`` (shared with ``scripts/encode_tokens.py``). Latents are the posterior means
``mu``, one float32 array ``(f, d)`` per cut (50 Hz for hop 320 at 16 kHz), in
``FeatureCache.for_checkpoint(out, "latents", ckpt)``. Cuts already in the cache are skipped, so an
interrupted run is resumed by running the same command again.
"""

from __future__ import annotations

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from speech.checkpoints import build_model
from speech.data.cache import FeatureCache
from speech.data.collate import duration_batches
from speech.data.prepare import prepared_cuts
from speech.tensors import pad_sequences


@torch.no_grad()
def encode_latents(model, cuts: list, cache: FeatureCache, *, max_duration: float, device, progress: bool):
    """Encodes ``cuts`` batch by batch and saves each cut's ``(f, d)`` float32 latents; returns how many."""
    done = 0
    with tqdm(total=len(cuts), desc="encode latents", unit="cut", disable=not progress) as bar:
        for batch in duration_batches(cuts, max_duration):
            audio, audio_lens, _ = pad_sequences([c.load_audio()[0] for c in batch])
            latents, latent_lens = model.encode(audio.to(device), audio_lens.to(device))
            for cut, row, n in zip(batch, latents.float().cpu().numpy(), latent_lens.tolist(), strict=True):
                cache.save(cut.id, row[:n].astype(np.float32))
            done += len(batch)
            bar.update(len(batch))
    return done


@hydra.main(config_path="../configs", config_name="encode", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    if cfg.kind != "latents":
        raise ValueError(
            f"scripts/encode_latents.py writes kind=latents, got kind={cfg.kind!r}: add kind=latents"
        )
    model, _ = build_model(cfg.ckpt)
    if not hasattr(model, "encode") or not hasattr(model, "latent_dim"):
        raise ValueError(f"{cfg.ckpt} holds a {type(model).__name__}, not a Flow-VAE")
    device = torch.device(cfg.device)
    model.to(device)
    cuts = prepared_cuts(cfg.data.prepared_dir)
    cache = FeatureCache.for_checkpoint(cfg.out, cfg.kind, cfg.ckpt)
    todo = set(cache.missing(c.id for c in cuts))
    todo_cuts = [c for c in cuts if c.id in todo]
    encoded = encode_latents(
        model, todo_cuts, cache, max_duration=cfg.batch_max_duration, device=device, progress=cfg.progress
    )
    before = len(cuts) - len(todo)
    print(f"latents in {cache.root}: {len(cuts)} cuts, {encoded} encoded now, {before} cached before")
    return {"cache": str(cache.root), "cuts": len(cuts), "encoded": encoded, "cached_before": before}


if __name__ == "__main__":
    main()
