"""Corpus preparation: recipe records -> validated train/val cuts + text BPE, written next to the data.

``prepared_dir`` receives ``train_cuts.jsonl.gz``, ``val_cuts.jsonl.gz``, ``bpe.json``, ``rejects.tsv``
(one line per skipped utterance with its reason) and ``summary.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from lhotse import CutSet

from speech.data.manifest import (
    CutRules,
    build_cuts,
    describe,
    drop_single_utterance_speakers,
    split_validation,
)
from speech.data.records import Utterance
from speech.data.rejects import RejectLog
from speech.text.bpe import TextBPE


def prepare_corpus(
    utterances: list[Utterance],
    prepared_dir: str | Path,
    *,
    rules: CutRules,
    rejects: RejectLog,
    bpe_vocab_size: int,
    bpe_min_frequency: int = 2,
    bpe_reuse: str | Path | None = None,
    bpe_phonemes: str | None = None,
    val_per_speaker: int = 1,
    val_max_total: int = 200,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Validates, splits and tokenizes a corpus.

    Args:
        utterances: Recipe output.
        prepared_dir: Output folder (created).
        rules: Clip requirements; failures go to ``rejects``.
        rejects: Already holds the recipe's own rejections; written to ``rejects.tsv``.
        bpe_vocab_size: Size of the byte-level BPE trained on the training transcripts.
        bpe_min_frequency: Minimum pair count for a BPE merge.
        bpe_reuse: A ``bpe.json`` to copy instead of training one (``bpe_vocab_size`` is then unused): data
            for a model trained on another corpus, such as an emotion adapter on the base AR model.
        bpe_phonemes: ``"espeak-ng"``: the BPE reads the IPA of the transcripts (``speech.text.phonemes``);
            unused with ``bpe_reuse``, whose BPE keeps its own setting.
        val_per_speaker: Utterances per training speaker held out for validation.
        val_max_total: Cap on the validation set size.
        seed: Seed of the validation split.
        progress: Show progress bars.

    Returns:
        The summary written to ``summary.json``.
    """
    out = Path(prepared_dir)
    if bpe_reuse is not None and not Path(bpe_reuse).is_file():
        raise FileNotFoundError(
            f"bpe.reuse: {bpe_reuse} not found; prepare the corpus whose BPE it is first "
            "(python scripts/prepare_data.py data=<that corpus>)"
        )
    out.mkdir(parents=True, exist_ok=True)
    cuts = build_cuts(utterances, rules, rejects, progress=progress)
    cuts = drop_single_utterance_speakers(cuts, rejects)
    if len(cuts) == 0:
        rejects.write(out / "rejects.tsv")
        raise ValueError(
            f"no usable utterances out of {len(utterances)} ({rejects.summary()}); see {out / 'rejects.tsv'}"
        )
    train, val = split_validation(cuts, val_per_speaker, val_max_total, seed)
    if bpe_reuse is not None:
        bpe = TextBPE.load(bpe_reuse)
    else:
        bpe = TextBPE.train(
            [c.supervisions[0].text for c in train],
            bpe_vocab_size,
            min_frequency=bpe_min_frequency,
            languages=[c.supervisions[0].language for c in train],
            phonemes=bpe_phonemes,
        )
    bpe.save(out / "bpe.json")
    train.to_file(out / "train_cuts.jsonl.gz")
    val.to_file(out / "val_cuts.jsonl.gz")
    rejects.write(out / "rejects.tsv")
    summary = {
        "records": len(utterances),
        "skipped": rejects.counts(),
        "train": describe(train),
        "val": describe(val),
        "val_texts_in_train": repeated_texts(train, val),
        "bpe_vocab_size": bpe.vocab_size,
        "bpe_reused": None if bpe_reuse is None else str(bpe_reuse),
        "bpe_phonemes": bpe.phonemes,
        "sample_rate": rules.sample_rate,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def repeated_texts(train: CutSet, val: CutSet) -> int:
    """How many validation cuts say a transcript that a training cut also says. Above zero, validation
    losses (and the AR stage's ``val/text_gain``) partly measure recall of sentences heard in training."""
    heard = {c.supervisions[0].text for c in train}
    return sum(c.supervisions[0].text in heard for c in val)


def prepared_cuts(prepared_dir: str | Path) -> list:
    """The train + val cuts of a prepared corpus (what the cache encoders fill caches for).

    Raises:
        FileNotFoundError: a cut manifest is missing (names the command that writes it).
    """
    cuts = []
    for split in ("train", "val"):
        path = Path(prepared_dir) / f"{split}_cuts.jsonl.gz"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `python scripts/prepare_data.py data=...` first")
        cuts += list(CutSet.from_file(path))
    return cuts
