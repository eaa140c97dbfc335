"""The DataModule every stage trains from: prepared cuts, duration-bucketed batches, references, caches.

Batches are capped by total seconds (Lhotse's ``DynamicBucketingSampler``, which splits the data
between DDP ranks by itself: run the Trainer with ``use_distributed_sampler=False``). A resumed run
continues mid-epoch on the batch after the last one trained, because the sampler is rebuilt for the
same epoch and fast-forwarded past the batches the checkpoint had already seen.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler

from speech.data.cache import FeatureCache
from speech.data.dataset import SpeechDataset
from speech.data.manifest import cut_emotion, cut_language
from speech.data.references import ReferenceSampler
from speech.data.shar import ShardFeatures, read_shar
from speech.text.bpe import TextBPE

PREPARED_FILES = ("train_cuts.jsonl.gz", "val_cuts.jsonl.gz", "bpe.json")


class _EpochBatches(torch.utils.data.Sampler):
    """Wraps a Lhotse sampler: forwards ``set_epoch`` to it and to the reference draw, and skips the
    first ``skip`` batches of the next pass (the batches a resumed checkpoint already trained on). With
    ``empty_error``, a pass that yields no batch at all raises ``ValueError(empty_error)`` (Lightning would
    start epoch after empty epoch and never reach ``max_steps``)."""

    def __init__(
        self,
        sampler: DynamicBucketingSampler | SimpleCutSampler,
        references: ReferenceSampler | None,
        skip: int = 0,
        empty_error: str | None = None,
    ):
        self.sampler, self.references, self.skip = sampler, references, skip
        self.empty_error = empty_error

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        if self.references is not None:
            self.references.set_epoch(epoch)

    def __iter__(self):
        it = iter(self.sampler)  # Lhotse samplers are their own iterators: iter() again would restart them
        skip, self.skip = self.skip, 0
        for _ in range(skip):
            if next(it, None) is None:
                return
        batch = next(it, None)
        if batch is None and skip == 0 and self.empty_error is not None:
            raise ValueError(self.empty_error)
        while batch is not None:
            yield batch
            batch = next(it, None)


class SpeechDataModule(L.LightningDataModule):
    """Serves batches from a folder written by ``scripts/prepare_data.py``.

    Args:
        prepared_dir: Folder with ``train_cuts.jsonl.gz``, ``val_cuts.jsonl.gz`` and ``bpe.json``.
        max_duration: Seconds of audio per batch (before padding).
        num_buckets: Duration buckets of the sampler.
        num_workers: DataLoader worker processes.
        seed: Shuffling and reference-draw seed.
        references: Add a reference utterance (another utterance of the same speaker) to every item.
        max_ref_duration: Crop references to at most this many seconds.
        features: Cached features to add to batches, batch key -> cache folder (see ``FeatureCache``).
        ref_features: Also add the whole reference's text tokens and cached features (``ref_text_tokens``,
            ``ref_<key>``...), the transcribed prompt of one-shot AR training; needs ``references``.
        emotion: Train and validate only on the cuts with this emotion label
            (``speech.data.manifest.cut_emotion``): the data of one emotion adapter. ``None``: every cut.
        reference_emotion: Draw references only from the training cuts with this label (``neutral``: the
            adapter learns to add the emotion to a neutral voice). ``None``: from every training cut.
        languages: Train, validate and draw references only on cuts in these languages (``["en"]``: an
            English model from a multilingual corpus). ``None``: every language.
        shar_dir: Read the cuts, their audio, the BPE and the ``features`` from this folder of Lhotse Shar
            shards (``scripts/export_shar.py``) instead of ``prepared_dir`` and the cache folders (only the
            keys of ``features`` are used then). Same seed, same batches.
    """

    def __init__(
        self,
        prepared_dir: str | Path,
        *,
        max_duration: float = 60.0,
        num_buckets: int = 8,
        num_workers: int = 2,
        seed: int = 0,
        references: bool = True,
        max_ref_duration: float | None = 6.0,
        features: dict[str, str] | None = None,
        ref_features: bool = False,
        emotion: str | None = None,
        reference_emotion: str | None = None,
        languages: list[str] | None = None,
        shar_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        if ref_features and not references:
            raise ValueError("ref_features=True needs references (set data.datamodule.references=true)")
        self.prepared_dir = Path(prepared_dir)
        self.max_duration, self.num_buckets, self.num_workers = max_duration, num_buckets, num_workers
        self.seed, self.use_references, self.max_ref_duration = seed, references, max_ref_duration
        self.feature_dirs = dict(features or {})
        self.ref_features = ref_features
        self.emotion, self.reference_emotion = emotion, reference_emotion
        self.languages = None if languages is None else sorted(set(languages))
        self.shar_dir = None if shar_dir is None else Path(shar_dir)
        self._shards: list[CutSet] = []  # both splits as read from the shards, for ShardFeatures
        self._skip_batches = 0
        self.train_cuts = self.val_cuts = self.reference_cuts = self.bpe = None

    def setup(self, stage: str | None = None) -> None:
        if self.shar_dir is not None:
            self._shards = [read_shar(self.shar_dir, split) for split in ("train", "val")]
            train, val = self._shards
            bpe_path = self.shar_dir / "bpe.json"
        else:
            missing = [f for f in PREPARED_FILES if not (self.prepared_dir / f).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{self.prepared_dir} lacks {', '.join(missing)}: "
                    "run `python scripts/prepare_data.py data=...` first"
                )
            train = CutSet.from_file(self.prepared_dir / "train_cuts.jsonl.gz").to_eager()
            val = CutSet.from_file(self.prepared_dir / "val_cuts.jsonl.gz").to_eager()
            bpe_path = self.prepared_dir / "bpe.json"
        train, val = self._in_languages(train), self._in_languages(val)
        self.train_cuts = self._labelled(train, self.emotion, "training")
        self.val_cuts = self._labelled(val, self.emotion)  # may be empty: then no validation loop
        self.reference_cuts = self._labelled(train, self.reference_emotion, "reference")
        self.bpe = TextBPE.load(bpe_path)

    def _in_languages(self, cuts: CutSet) -> CutSet:
        """The cuts in ``languages`` (all when ``None``).

        Raises:
            ValueError: no cut is in those languages; the message lists the languages there are.
        """
        if self.languages is None:
            return cuts
        kept = cuts.filter(lambda c: cut_language(c) in self.languages).to_eager()
        if len(kept) == 0:
            there = sorted({str(cut_language(c)) for c in cuts})
            raise ValueError(
                f"no cuts in languages {self.languages} in {self.prepared_dir}; its cuts are in {there}"
            )
        return kept

    def _labelled(self, cuts: CutSet, emotion: str | None, what: str | None = None) -> CutSet:
        """The cuts labelled ``emotion`` (all when ``None``).

        Raises:
            ValueError: none has it and ``what`` names the set; the message lists the labels there are.
        """
        if emotion is None:
            return cuts
        kept = cuts.filter(lambda c: cut_emotion(c) == emotion).to_eager()
        if len(kept) == 0 and what is not None:
            labels = sorted({str(cut_emotion(c)) for c in cuts})
            raise ValueError(
                f"no {what} cuts with emotion {emotion!r} in {self.prepared_dir}; "
                f"its training cuts have {labels}"
            )
        return kept

    def _dataset(self) -> SpeechDataset:
        refs = ReferenceSampler(self.reference_cuts, seed=self.seed) if self.use_references else None
        if self.shar_dir is not None:
            features = {key: ShardFeatures(key, *self._shards) for key in self.feature_dirs}
        else:
            features = {key: FeatureCache(path) for key, path in self.feature_dirs.items()}
        return SpeechDataset(self.bpe, refs, features, self.max_ref_duration, self.ref_features)

    def _loader(self, cuts: CutSet, *, train: bool) -> torch.utils.data.DataLoader:
        dataset = self._dataset()
        options = {"max_duration": self.max_duration, "shuffle": train, "drop_last": train, "seed": self.seed}
        if len(cuts) < 2:  # Lhotse's bucketing needs two buckets; a one-cut validation set needs none
            sampler = SimpleCutSampler(cuts, **options)
        else:
            with warnings.catch_warnings():  # cuts are eager on purpose: references need random access
                warnings.filterwarnings("ignore", message=".*eagerly read CutSet")
                buckets = min(self.num_buckets, len(cuts))  # small validation sets
                sampler = DynamicBucketingSampler(cuts, num_buckets=buckets, **options)
        skip, self._skip_batches = (self._skip_batches, 0) if train else (0, 0)
        empty = (
            f"no training batch in an epoch for rank {sampler.rank} of {sampler.world_size}: {len(cuts)} "
            f"cuts in batches of {self.max_duration} s, each duration bucket's partial batch dropped; lower "
            "data.datamodule.max_duration (or num_buckets), or train on fewer ranks"
        )
        batches = _EpochBatches(sampler, dataset.references, skip=skip, empty_error=empty if train else None)
        if self.trainer is not None:
            batches.set_epoch(self.trainer.current_epoch)
        return torch.utils.data.DataLoader(
            dataset, sampler=batches, batch_size=None, num_workers=self.num_workers
        )

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader(self.train_cuts, train=True)

    def val_dataloader(self) -> torch.utils.data.DataLoader | list:
        if len(self.val_cuts) == 0:  # e.g. no validation cut of this emotion: no validation loop
            return []
        return self._loader(self.val_cuts, train=False)

    def state_dict(self) -> dict:
        """Where in the epoch training stood, so a resumed run skips what it already saw."""
        if self.trainer is None:
            return {"batches_done": 0}
        # `processed`, not `completed`: checkpoints written in on_train_batch_end see the batch as
        # processed but not yet completed.
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return {"batches_done": int(progress.processed)}

    def load_state_dict(self, state: dict) -> None:
        self._skip_batches = int(state.get("batches_done", 0))
