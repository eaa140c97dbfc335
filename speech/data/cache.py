"""On-disk cache of derived features (audio tokens, Flow-VAE latents), keyed by the producing checkpoint.

Later stages read these instead of running an encoder inside their training step. The key is a hash of
the checkpoint file's bytes, so retraining the tokenizer can never silently mix old and new tokens.

Layout::

    <cache_dir>/<kind>/<checkpoint stem>-<sha256[:16]>/
        meta.json                     what produced it (checkpoint path, hash, feature kind, run lineage)
        <2 hex chars>/<cut id>.npy    one array per cut, written atomically
        <2 hex chars>/<cut id>.source what it was computed from (optional), see ``check_source``

Cut ids are unique within a corpus, not across corpora: two corpora encoded by one checkpoint into one
cache folder may share ids for different recordings. ``scripts/encode.py`` therefore writes each cut's source
(recording and span) next to its array and refuses to reuse an array whose source differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from speech.checkpoints import file_sha256


class FeatureCache:
    """One folder of per-cut arrays produced by one checkpoint.

    Args:
        root: The cache folder (``<cache_dir>/<kind>/<key>``).
        meta: Provenance written to ``meta.json`` when the folder is created; an existing folder whose
            ``meta.json`` disagrees (same folder, other producer) raises ``ValueError``.
    """

    def __init__(self, root: str | Path, meta: dict | None = None) -> None:
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if meta_path.is_file():
            self.meta = json.loads(meta_path.read_text())
            if meta is not None and meta.get("sha256") != self.meta.get("sha256"):
                raise ValueError(
                    f"cache {self.root} was made by a checkpoint with sha256 {self.meta.get('sha256')}, "
                    f"not {meta.get('sha256')}; use another cache folder"
                )
        elif meta is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            self.meta = meta
            meta_path.write_text(json.dumps(meta, indent=2))
        else:
            raise FileNotFoundError(
                f"no feature cache at {self.root} (meta.json missing): run the stage's encode command first"
            )

    @classmethod
    def for_checkpoint(
        cls, cache_dir: str | Path, kind: str, checkpoint: str | Path, lineage: str | None = None
    ) -> FeatureCache:
        """The cache of ``kind`` features (e.g. ``"tokens"``) produced by ``checkpoint``; a new folder
        records ``lineage``, the training run the checkpoint belongs to (``speech.checkpoints.run_lineage``),
        when given."""
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint} not found: it keys the '{kind}' feature cache")
        sha = file_sha256(checkpoint)
        root = Path(cache_dir) / kind / f"{checkpoint.stem}-{sha[:16]}"
        meta = {"kind": kind, "checkpoint": str(checkpoint.resolve()), "sha256": sha}
        return cls(root, meta if lineage is None else {**meta, "lineage": lineage})

    def path(self, cut_id: str) -> Path:
        safe = cut_id.replace(os.sep, "__")
        shard = hashlib.blake2b(cut_id.encode(), digest_size=1).hexdigest()
        return self.root / shard / f"{safe}.npy"

    def has(self, cut_id: str) -> bool:
        return self.path(cut_id).is_file()

    def missing(self, cut_ids: Iterable[str]) -> list[str]:
        """The ids without a cached array (what an interrupted encode run still has to do)."""
        return [i for i in cut_ids if not self.has(i)]

    def save(self, cut_id: str, array: np.ndarray, source: str | None = None) -> Path:
        """Writes atomically: a killed run leaves either the old file or the new one, never half of one.
        ``source`` (what the array was computed from) is written first, so an array never lacks it."""
        path = self.path(cut_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        if source is not None:
            _write_atomic(path.with_suffix(".source"), lambda f: f.write(source.encode()))
        _write_atomic(path, lambda f: np.save(f, np.asarray(array)))
        return path

    def check_source(self, cut_id: str, source: str) -> None:
        """Raises ``ValueError`` when the cached array of ``cut_id`` was computed from another source
        (another corpus's recording with the same cut id); an array saved without a source passes."""
        known = self.path(cut_id).with_suffix(".source")
        if known.is_file() and known.read_text() != source:
            raise ValueError(
                f"the cached {self.meta.get('kind', 'feature')} of cut {cut_id!r} in {self.root} came from "
                f"{known.read_text()!r}, this corpus's cut is {source!r}: two corpora share cut ids; encode "
                "this one into another cache folder (out=... or paths.cache_dir=...)"
            )

    def arrays(self) -> Iterator[np.ndarray]:
        """Every cached array, in a fixed order (of the files, not of the cuts)."""
        for path in sorted(self.root.glob("*/*.npy")):
            yield np.load(path)

    def load(self, cut_id: str) -> np.ndarray:
        path = self.path(cut_id)
        if not path.is_file():
            raise KeyError(f"no cached {self.meta.get('kind', 'feature')} for cut {cut_id!r} in {self.root}")
        return np.load(path)


def _write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(file)`` into a temporary file in ``path``'s folder, then renamed to ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
