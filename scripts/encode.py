"""Encode every train + val cut of a prepared corpus with a trained stage, cached for later stages.

python scripts/encode.py kind=tokens ckpt=logs/tokenizer_tiny/checkpoints/last.ckpt [data=...] [device=cuda]
python scripts/encode.py kind=latents ckpt=logs/flow_vae_tiny/checkpoints/last.ckpt [data=...]

- ``kind=tokens``: 25 Hz audio tokens of an audio tokenizer checkpoint, one int32 array ``(n,)`` per cut,
  computed from the mel features that tokenizer was trained on.
- ``kind=latents``: Flow-VAE posterior means ``mu``, one float32 array ``(f, d)`` per cut (50 Hz for hop 320
  at 16 kHz).

Features go to ``FeatureCache.for_checkpoint(out, kind, ckpt)``. Cuts already in the cache are skipped, so an
interrupted run is resumed by running the same command again; a cached cut of the same id but another
recording (another corpus encoded into the same folder) stops the run with an error instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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

# kind -> (what the checkpoint must hold, the attributes that say so, the cached dtype)
KINDS = {
    "tokens": ("an audio tokenizer", ("encode",), np.int32),
    "latents": ("a Flow-VAE", ("encode", "latent_dim"), np.float32),
}

Encoder = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def build_encoder(kind: str, ckpt: str, device: torch.device) -> Encoder:
    """The checkpoint's model as ``(audio (b, s), audio_lens (b,)) -> (features (b, n, ...), lens (b,))``."""
    what, attrs, _ = KINDS[kind]
    model, ckpt_cfg = build_model(ckpt)
    if not all(hasattr(model, a) for a in attrs):
        raise ValueError(f"{ckpt} holds a {type(model).__name__}, not {what}")
    model.to(device)
    if kind == "tokens":
        mel = build_component(ckpt_cfg, "data.mel").to(device)  # the features the tokenizer was trained on
        return lambda audio, audio_lens: model.encode(*mel(audio, audio_lens))

    def latents(audio: torch.Tensor, audio_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, mu_lens = model.encode(audio, audio_lens)
        return mu.float(), mu_lens  # float32 whatever the model's dtype, so numpy can take it

    return latents


@torch.no_grad()
def encode_cuts(
    encoder: Encoder,
    cuts: list,
    cache: FeatureCache,
    kind: str,
    *,
    max_duration: float,
    device,
    progress: bool,
) -> int:
    """Encodes ``cuts`` batch by batch and saves each cut's features in the ``kind``'s dtype; returns how
    many."""
    dtype, done = KINDS[kind][2], 0
    with tqdm(total=len(cuts), desc=f"encode {kind}", unit="cut", disable=not progress) as bar:
        for batch in duration_batches(cuts, max_duration):
            audio, audio_lens, _ = pad_sequences([c.load_audio()[0] for c in batch])
            feats, feat_lens = encoder(audio.to(device), audio_lens.to(device))
            for cut, row, n in zip(batch, feats.cpu().numpy(), feat_lens.tolist(), strict=True):
                cache.save(cut.id, row[:n].astype(dtype), source=cut_source(cut))
            done += len(batch)
            bar.update(len(batch))
    return done


def cut_source(cut) -> str:
    """What a cut's features are computed from: its recording's file name (or id), length in samples and
    the cut's span in seconds. The folder is left out, so a corpus that moved still matches itself."""
    sources = cut.recording.sources
    name = (
        Path(sources[0].source).name if sources and isinstance(sources[0].source, str) else cut.recording_id
    )
    return f"{name} {cut.recording.num_samples} {cut.start:.3f}+{cut.duration:.3f}"


@hydra.main(config_path="../configs", config_name="entry/encode", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    if cfg.kind not in KINDS:
        raise ValueError(f"unknown kind={cfg.kind!r}: scripts/encode.py writes kind={' | kind='.join(KINDS)}")
    device = torch.device(cfg.device)
    encoder = build_encoder(cfg.kind, cfg.ckpt, device)
    cuts = prepared_cuts(cfg.data.prepared_dir)
    cache = FeatureCache.for_checkpoint(cfg.out, cfg.kind, cfg.ckpt)
    todo = set(cache.missing(c.id for c in cuts))
    for cut in cuts:
        if cut.id not in todo:
            cache.check_source(cut.id, cut_source(cut))
    encoded = encode_cuts(
        encoder, [c for c in cuts if c.id in todo], cache, cfg.kind,
        max_duration=cfg.batch_max_duration, device=device, progress=cfg.progress,
    )  # fmt: skip
    before = len(cuts) - len(todo)
    print(f"{cfg.kind} in {cache.root}: {len(cuts)} cuts, {encoded} encoded now, {before} cached before")
    return {"cache": str(cache.root), "cuts": len(cuts), "encoded": encoded, "cached_before": before}


if __name__ == "__main__":
    main()
