"""Lhotse Shar shards of a prepared corpus: what a cluster trains from instead of the corpus folder, the cut
manifests and the feature caches (many small files on a shared filesystem).

Layout of a Shar folder (``export_shar``)::

    <shar_dir>/bpe.json                      the corpus's text BPE
    <shar_dir>/{train,val}/cuts.<n>.jsonl.gz  the cuts, in manifest order, ``shard_size`` per shard
    <shar_dir>/{train,val}/recording.<n>.tar  their audio (flac)
    <shar_dir>/{train,val}/<key>.<n>.tar      each cached feature (``tokens``, ``latents``) as .npy

``read_shar`` reads a split back in manifest order with its audio and features in memory (compressed, as in
the tars), so the duration-bucketed sampler draws the same batches as from the manifest with the same seed,
and every rank takes its share of them as it does from the manifest.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import numpy as np
from lhotse import CutSet

from speech.data.cache import FeatureCache

SPLITS = ("train", "val")


def export_shar(
    prepared_dir: str | Path,
    shar_dir: str | Path,
    shard_size: int = 1000,
    features: Mapping[str, str | Path] | None = None,
) -> list[str]:
    """Writes both splits of a prepared corpus, their audio (flac) and cached features as Shar shards.

    Args:
        prepared_dir: Folder of ``scripts/prepare_data.py`` (cut manifests, ``bpe.json``).
        shar_dir: Output folder (layout in the module docstring).
        shard_size: Cuts per shard.
        features: Cached features to include, shard field -> ``FeatureCache`` folder (``{"tokens": ...}``).

    Returns:
        The files written (sorted).

    Raises:
        KeyError: a cut has no cached feature (names the cut and the cache).
    """
    prepared_dir, shar_dir = Path(prepared_dir), Path(shar_dir)
    caches = {key: FeatureCache(path) for key, path in (features or {}).items()}
    fields = {"recording": "flac", **{key: "numpy" for key in caches}}
    written = []
    for split in SPLITS:
        cuts = CutSet.from_file(prepared_dir / f"{split}_cuts.jsonl.gz")
        if caches:
            cuts = cuts.map(partial(_with_features, caches=caches))
        (shar_dir / split).mkdir(parents=True, exist_ok=True)
        paths = cuts.to_shar(shar_dir / split, fields=fields, shard_size=shard_size)
        written += [str(p) for files in paths.values() for p in files]
    shutil.copyfile(prepared_dir / "bpe.json", shar_dir / "bpe.json")
    return sorted([*written, str(shar_dir / "bpe.json")])


def _with_features(cut, *, caches: Mapping[str, FeatureCache]):
    for key, cache in caches.items():
        cut = cut.attach_tensor(key, cache.load(cut.id))
    return cut


def read_shar(shar_dir: str | Path, split: str) -> CutSet:
    """One split of a Shar folder, in manifest order, audio and features in memory.

    Raises:
        FileNotFoundError: the split has no shards (names the export command).
    """
    folder = Path(shar_dir) / split
    if not any(folder.glob("cuts.*.jsonl*")):
        raise FileNotFoundError(
            f"no Shar shards in {folder}: export the prepared corpus first "
            "(python scripts/export_shar.py data=... out=...)"
        )
    return CutSet.from_shar(in_dir=folder).to_eager()


class ShardFeatures:
    """A feature of the cuts read from Shar shards, by cut id: what ``FeatureCache`` is for cut manifests.

    Args:
        key: The shard field (``"tokens"``, ``"latents"``).
        cutsets: Cuts read by ``read_shar`` (both splits: references come from the training cuts).
    """

    def __init__(self, key: str, *cutsets: CutSet) -> None:
        self.key = key
        self.cuts = {cut.id: cut for cuts in cutsets for cut in cuts}

    def load(self, cut_id: str) -> np.ndarray:
        cut = self.cuts.get(cut_id)
        if cut is None or not cut.has_custom(self.key):
            raise KeyError(
                f"no {self.key!r} in the Shar shards for cut {cut_id!r}: export them with "
                f"features.{self.key}=<checkpoint> (scripts/export_shar.py)"
            )
        return cut.load_custom(self.key)
