"""The tokenizer's CTC alignments against an even spread of the text: what the AR model's text-aligned
hints (``model.hint_pointer``) read instead of the plain hints' spread, checked before training on them.

    python eval/alignment_report.py ckpt=logs/tokenizer_tiny/checkpoints/last.ckpt [data=...] [split=val]

Reads the ``alignments`` and ``tokens`` caches of ``ckpt`` (``scripts/encode.py``) and the prepared corpus's
text BPE. For each cut of ``split``: where each BPE token starts by the alignment and by an even spread
(``speech.text.ctc_align``), in audio tokens (25 Hz, 40 ms). Summary: the mean distance between the two,
the share of BPE tokens more than two audio tokens (80 ms) apart, the audio before the first token, and
how many cuts' alignments are an even spread themselves (their CTC head found no path:
``scripts/encode.py`` spread them). Writes ``summary.json``, ``cuts.jsonl`` and ``alignments.png`` (the
text token under the pointer against the audio token, both ways, for the first ``plot_cuts`` cuts) under
``out_dir`` (``configs/entry/alignment_report.yaml``).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import numpy as np
from lhotse import CutSet
from omegaconf import DictConfig

from speech.data.cache import FeatureCache
from speech.text.bpe import TextBPE
from speech.text.byte_ctc import judge_target
from speech.text.ctc_align import even_frames, even_starts, text_starts
from speech.text.normalize import base_language

FAR = 2  # audio tokens (80 ms) between two starts that count as "far"


def compare_cut(bpe: TextBPE, cut, frames: np.ndarray, end: int) -> dict:
    """One cut's starts both ways and their distances (``utt``, ``aligned``, ``even``, ``pieces``, ...)."""
    sup = cut.supervisions[0]
    aligned = text_starts(bpe, sup.text, sup.language, frames, end)
    even = even_starts(len(aligned), end)
    gap = np.abs(aligned - even)
    spread = bool(np.array_equal(frames, even_frames(len(frames), end)))  # encode.py found no CTC path
    return {
        "utt": cut.id, "tokens": end, "text_tokens": len(aligned),
        "mean_abs": float(gap.mean()) if len(gap) else 0.0, "far": int((gap > FAR).sum()),
        "lead": int(aligned[0]) if len(aligned) else 0, "spread_evenly": spread,
        "aligned": aligned.tolist(), "even": even.tolist(),
        "pieces": [sup.text[a:b] for a, b in bpe.offsets(sup.text)],
    }  # fmt: skip


def summarize(records: list[dict]) -> dict:
    text_tokens = sum(r["text_tokens"] for r in records)
    return {
        "cuts": len(records),
        "text_tokens": text_tokens,
        "audio_per_text_token": sum(r["tokens"] for r in records) / max(1, text_tokens),
        "mean_abs_tokens": sum(r["mean_abs"] * r["text_tokens"] for r in records) / max(1, text_tokens),
        "far_pct": 100 * sum(r["far"] for r in records) / max(1, text_tokens),
        "lead_tokens": float(np.mean([r["lead"] for r in records])) if records else 0.0,
        "spread_evenly_cuts": sum(r["spread_evenly"] for r in records),
    }


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(records), 1, figsize=(10, 2.6 * len(records)), squeeze=False)
    for ax, r in zip(axes[:, 0], records, strict=True):
        j = np.arange(r["tokens"])
        for name, starts, style in (("CTC alignment", r["aligned"], "-"), ("even spread", r["even"], "--")):
            pointer = np.clip(np.searchsorted(starts, j, side="right") - 1, 0, None)
            ax.step(j, pointer, style, where="post", label=name)
        ax.set_yticks(range(len(r["pieces"])), [p.strip() or "␣" for p in r["pieces"]], fontsize=6)
        ax.set_title(f"{r['utt']}: mean distance {r['mean_abs']:.1f} tokens", fontsize=9)
        ax.set_ylabel("text token")
    axes[-1, 0].set_xlabel("audio token (25 Hz)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@hydra.main(config_path="../configs", config_name="entry/alignment_report", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    prepared = Path(cfg.data.prepared_dir)
    bpe = TextBPE.load(prepared / "bpe.json")
    caches = {
        kind: FeatureCache.for_checkpoint(cfg.paths.cache_dir, kind, cfg.ckpt)
        for kind in ("alignments", "tokens")
    }
    cuts = CutSet.from_file(prepared / f"{cfg.split}_cuts.jsonl.gz")
    keep = None if cfg.languages is None else {base_language(lang) for lang in cfg.languages}
    records = []
    for cut in cuts:
        sup = cut.supervisions[0]
        if keep is not None and base_language(sup.language) not in keep:
            continue
        if not (caches["alignments"].has(cut.id) and caches["tokens"].has(cut.id)):
            raise FileNotFoundError(
                f"cut {cut.id} is not in both caches of {cfg.ckpt}: run scripts/encode.py kind=tokens and "
                "kind=alignments with it first"
            )
        frames = caches["alignments"].load(cut.id)
        if len(frames) != len(judge_target(sup.text, sup.language).encode()):
            raise ValueError(
                f"the alignment of {cut.id} does not fit its transcript: another corpus's cache?"
            )
        records.append(compare_cut(bpe, cut, frames, len(caches["tokens"].load(cut.id))))
    summary = {"ckpt": str(cfg.ckpt), "split": cfg.split, **summarize(records)}
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "cuts.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    if records and cfg.plot_cuts > 0:
        plot(records[: cfg.plot_cuts], out / "alignments.png")
    print(json.dumps(summary, indent=2))
    print(f"written to {out}")
    return summary


if __name__ == "__main__":
    main()
