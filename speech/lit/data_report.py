"""One pass of the batch pipeline over prepared data, summarized for a person (and a duration plot)."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from speech.audio.mel import LogMelSpectrogram
from speech.lit.datamodule import SpeechDataModule


def check_pipeline(
    datamodule: SpeechDataModule,
    mel: LogMelSpectrogram,
    *,
    max_batches: int | None = None,
    progress: bool = True,
) -> dict:
    """Iterates training batches through the real DataLoader and computes mels for each.

    Checks that every reference is a different utterance of the same speaker and that padding masks
    agree with the lengths; returns batch statistics.
    """
    datamodule.setup("fit")
    speaker_of = {c.id: c.supervisions[0].speaker for c in datamodule.train_cuts}
    seconds, fill, sizes, bad_refs, n_refs, dropped = [], [], [], 0, 0, 0
    mel_shape = None
    loader = datamodule.train_dataloader()
    for batch in tqdm(islice(loader, max_batches), desc="batches", unit="batch", disable=not progress):
        lens = batch["audio_lens"]
        if not torch.equal(batch["audio_mask"].sum(1), lens):
            raise AssertionError("audio_mask disagrees with audio_lens")
        seconds.append(float(lens.sum()) / mel.sample_rate)
        fill.append(float(lens.sum()) / batch["audio"].numel())
        sizes.append(len(batch["ids"]))
        dropped += batch["dropped"]
        for cut_id, ref_id in zip(batch["ids"], batch.get("ref_ids", []), strict=False):
            n_refs += 1
            bad_refs += int(ref_id == cut_id or speaker_of[ref_id] != speaker_of[cut_id])
        feats, _ = mel(batch["audio"], lens)
        mel_shape = list(feats.shape)
    if not sizes:
        raise RuntimeError("the training loader produced no batch: max_duration may exceed the whole corpus")
    return {
        "batches": len(sizes),
        "cuts_per_batch_mean": round(float(np.mean(sizes)), 2),
        "seconds_per_batch_mean": round(float(np.mean(seconds)), 2),
        "padding_fraction_mean": round(1.0 - float(np.mean(fill)), 4),
        "references_checked": n_refs,
        "references_same_utterance_or_wrong_speaker": bad_refs,
        "last_mel_shape": mel_shape,
        "cuts_dropped_at_load": dropped,
    }


def plot_durations(cut_durations: dict[str, list[float]], path: str | Path) -> Path:
    """Histogram of clip durations per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, durs in cut_durations.items():
        ax.hist(durs, bins=40, alpha=0.6, label=f"{name} ({len(durs)} clips, {sum(durs) / 3600:.2f} h)")
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("clips")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
