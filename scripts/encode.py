"""Encode every train + val cut of a prepared corpus with a trained stage, cached for later stages.

python scripts/encode.py kind=tokens ckpt=logs/tokenizer_tiny/checkpoints/last.ckpt [data=...] [device=cuda]
python scripts/encode.py kind=latents ckpt=logs/flow_vae_tiny/checkpoints/last.ckpt [data=...]
python scripts/encode.py kind=alignments ckpt=logs/tokenizer_tiny/checkpoints/last.ckpt [data=...]

- ``kind=tokens``: 25 Hz audio tokens of an audio tokenizer checkpoint, one int32 array ``(n,)`` per cut,
  computed from the mel features that tokenizer was trained on.
- ``kind=latents``: Flow-VAE posterior means ``mu``, one float32 array ``(f, d)`` per cut (50 Hz for hop 320
  at 16 kHz).
- ``kind=alignments``: where the transcript is said, by the audio tokenizer's CTC head: the transcript's
  CTC target (``judge_target`` bytes) forced through the head's log-probabilities
  (``speech.text.ctc_align.forced_align``), one int32 array ``(L,)`` per cut, the audio token where each
  byte is first emitted. Text-aligned hints of the AR model read it (``docs/ar.md``). A cut too short for
  its transcript gets the bytes spread evenly over its tokens, and the run counts them.

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

from speech.checkpoints import build_component, build_model, load_checkpoint, run_lineage
from speech.data.cache import FeatureCache
from speech.data.collate import duration_batches
from speech.data.prepare import prepared_cuts
from speech.tensors import pad_sequences
from speech.text.byte_ctc import judge_target, text_to_ids
from speech.text.ctc_align import even_frames, forced_align

# kind -> (what the checkpoint must hold, the attributes that say so, the cached dtype)
KINDS = {
    "tokens": ("an audio tokenizer", ("encode",), np.int32),
    "latents": ("a Flow-VAE", ("encode", "latent_dim"), np.float32),
    "alignments": ("an audio tokenizer", ("encode", "transcribe"), np.int32),
}

# (audio (b, s), audio_lens (b,), the batch's cuts) -> (features (b, n, ...), lens (b,))
Encoder = Callable[[torch.Tensor, torch.Tensor, list], tuple[torch.Tensor, torch.Tensor]]


def build_encoder(kind: str, ckpt: str, device: torch.device) -> Encoder:
    """The checkpoint's model as an ``Encoder``."""
    what, attrs, _ = KINDS[kind]
    model, ckpt_cfg = build_model(ckpt)
    if not all(hasattr(model, a) for a in attrs):
        raise ValueError(f"{ckpt} holds a {type(model).__name__}, not {what}")
    model.to(device)
    if kind == "latents":

        def latents(audio: torch.Tensor, audio_lens: torch.Tensor, cuts: list):
            mu, mu_lens = model.encode(audio, audio_lens)
            return mu.float(), mu_lens  # float32 whatever the model's dtype, so numpy can take it

        return latents
    mel = build_component(ckpt_cfg, "data.mel").to(device)  # the features the tokenizer was trained on
    if kind == "tokens":
        return lambda audio, audio_lens, cuts: model.encode(*mel(audio, audio_lens))
    return TranscriptAligner(model, mel)


class TranscriptAligner:
    """An ``Encoder`` of alignments: ``(frames (b, L), lens (b,))``, the audio token where each byte of each
    cut's CTC target is first said, by the tokenizer's CTC head; spread evenly over the cut's tokens where no
    CTC path fits (counted in ``spread_evenly``)."""

    def __init__(self, model, mel) -> None:
        self.model, self.mel, self.spread_evenly = model, mel, 0

    def __call__(self, audio: torch.Tensor, audio_lens: torch.Tensor, cuts: list):
        out = self.model(*self.mel(audio, audio_lens))
        rows = []
        for cut, log_probs, n in zip(cuts, out.ctc_log_probs.float().cpu().numpy(), out.ctc_lens.tolist(),
                                     strict=True):  # fmt: skip
            sup = cut.supervisions[0]
            target = text_to_ids(judge_target(sup.text, sup.language))
            try:
                frames = forced_align(log_probs[:n], target) // self.model.ctc_upsample
            except ValueError:
                self.spread_evenly += 1
                frames = even_frames(len(target), n // self.model.ctc_upsample)
            rows.append(torch.as_tensor(frames, dtype=torch.int64))
        frames, lens, _ = pad_sequences(rows)
        return frames, lens


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
            feats, feat_lens = encoder(audio.to(device), audio_lens.to(device), batch)
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
    cache = FeatureCache.for_checkpoint(cfg.out, cfg.kind, cfg.ckpt, run_lineage(load_checkpoint(cfg.ckpt)))
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
    summary = {"cache": str(cache.root), "cuts": len(cuts), "encoded": encoded, "cached_before": before}
    if cfg.kind == "alignments":
        spread = encoder.spread_evenly
        print(f"alignments: {spread} of the {encoded} cuts had no CTC path and were spread evenly")
        summary["spread_evenly"] = spread
    return summary


if __name__ == "__main__":
    main()
