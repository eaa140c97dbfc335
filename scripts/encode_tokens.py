"""Encode every train + val cut of a prepared corpus into 25 Hz audio tokens, cached for later stages.

python scripts/encode_tokens.py ckpt=logs/tokenizer_tiny/checkpoints/last.ckpt [data=...] [device=cuda]

Tokens go to ``FeatureCache.for_checkpoint(out, "tokens", ckpt)`` as one int32 array ``(n,)`` per cut. Cuts
already in the cache are skipped, so an interrupted run is resumed by running the same command again.
"""

from __future__ import annotations

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from speech.checkpoints import build_component, build_model
from speech.data.cache import FeatureCache
from speech.data.collate import duration_batches
from speech.data.prepare import prepared_cuts
from speech.tensors import pad_sequences


@torch.no_grad()
def encode_cuts(model, mel, cuts: list, cache: FeatureCache, *, max_duration: float, device, progress: bool):
    """Tokenizes ``cuts`` batch by batch and saves each cut's ``(n,)`` int32 tokens; returns how many."""
    done = 0
    with tqdm(total=len(cuts), desc="encode tokens", unit="cut", disable=not progress) as bar:
        for batch in duration_batches(cuts, max_duration):
            audio, audio_lens, _ = pad_sequences([c.load_audio()[0] for c in batch])
            feats, mel_lens = mel(audio.to(device), audio_lens.to(device))
            tokens, token_lens = model.encode(feats, mel_lens)
            for cut, row, n in zip(batch, tokens.cpu().numpy(), token_lens.tolist(), strict=True):
                cache.save(cut.id, row[:n].astype(np.int32))
            done += len(batch)
            bar.update(len(batch))
    return done


@hydra.main(config_path="../configs", config_name="encode", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    if cfg.kind != "tokens":
        raise ValueError(f"scripts/encode_tokens.py writes kind=tokens, got kind={cfg.kind!r}")
    model, ckpt_cfg = build_model(cfg.ckpt)
    if not hasattr(model, "encode"):
        raise ValueError(f"{cfg.ckpt} holds a {type(model).__name__}, not an audio tokenizer")
    device = torch.device(cfg.device)
    model.to(device)
    mel = build_component(ckpt_cfg, "data.mel").to(device)  # the features the tokenizer was trained on
    cuts = prepared_cuts(cfg.data.prepared_dir)
    cache = FeatureCache.for_checkpoint(cfg.out, cfg.kind, cfg.ckpt)
    todo = set(cache.missing(c.id for c in cuts))
    encoded = encode_cuts(
        model, mel, [c for c in cuts if c.id in todo], cache,
        max_duration=cfg.batch_max_duration, device=device, progress=cfg.progress,
    )  # fmt: skip
    before = len(cuts) - len(todo)
    print(f"tokens in {cache.root}: {len(cuts)} cuts, {encoded} encoded now, {before} cached before")
    return {"cache": str(cache.root), "cuts": len(cuts), "encoded": encoded, "cached_before": before}


if __name__ == "__main__":
    main()
