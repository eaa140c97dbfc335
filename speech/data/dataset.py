"""Map-style dataset that turns a sampled CutSet into one padded training batch.

Legend: b batch, t samples, r reference samples, n text tokens, k cached-feature frames.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from lhotse import CutSet

from speech.data.cache import FeatureCache
from speech.data.references import ReferenceSampler
from speech.data.shar import ShardFeatures
from speech.tensors import pad_sequences
from speech.text.bpe import TextBPE
from speech.text.ctc_align import text_starts

log = logging.getLogger(__name__)

ALIGNMENTS = "alignments"  # feature key of the CTC alignments (scripts/encode.py kind=alignments)
TOKENS = "tokens"  # feature key of the audio tokens, where the alignments' audio ends
TEXT_STARTS = "text_starts"  # batch key of where each text token starts (with alignments)


class SpeechDataset(torch.utils.data.Dataset):
    """Loads audio, reference audio, text tokens and cached features for the cuts of one batch.

    A cut whose audio (or its reference's audio, or a cached feature) cannot be loaded is dropped from
    the batch with a one-line warning and counted in ``self.dropped``; training never stops on bad data.

    Args:
        bpe: Text BPE.
        references: Where reference utterances come from; ``None`` leaves references out.
        features: Cached per-cut features to add, by batch key (e.g. ``{"tokens": FeatureCache}``; from Shar
            shards a ``ShardFeatures``).
        max_ref_duration: References longer than this are randomly cropped, seconds.
        ref_features: Also add the FULL (uncropped) reference's text tokens and cached features, the
            transcribed prompt of one-shot training (needs ``references``).

    With a feature ``alignments`` (where each byte of the CTC transcript is said) the batch also gets
    ``text_starts``: the audio token where each text BPE token starts (``speech.text.ctc_align``).

    Raises:
        ValueError: ``ref_features`` without ``references``; ``alignments`` with a BPE over phonemes.
    """

    def __init__(
        self,
        bpe: TextBPE,
        references: ReferenceSampler | None = None,
        features: Mapping[str, FeatureCache | ShardFeatures] | None = None,
        max_ref_duration: float | None = 6.0,
        ref_features: bool = False,
    ) -> None:
        if ref_features and references is None:
            raise ValueError("ref_features=True needs references (a ReferenceSampler)")
        if ALIGNMENTS in (features or {}) and bpe.phonemes is not None:
            raise ValueError(
                f"the '{ALIGNMENTS}' feature places spelled text: it needs a BPE over the text, not over "
                f"phonemes ({bpe.phonemes}); leave data.bpe.phonemes unset"
            )
        self.bpe = bpe
        self.ref_features = ref_features
        self.references = references
        self.features = dict(features or {})
        self.max_ref_duration = max_ref_duration
        self.dropped: dict[str, int] = {}

    def _drop(self, cut_id: str, what: str, err: Exception) -> None:
        self.dropped[what] = self.dropped.get(what, 0) + 1
        log.warning("dropping cut %s from its batch: %s failed (%s)", cut_id, what, err)

    def _load(self, cut) -> dict | None:
        item = {"id": cut.id}
        try:
            item["audio"] = cut.load_audio()[0]
        except Exception as err:
            return self._drop(cut.id, "audio", err)
        if self.references is not None:
            try:
                full = self.references.reference_for(cut)
                ref = self.references.crop(full, self.max_ref_duration, key=cut.id)
                item["ref_audio"] = ref.load_audio()[0]
                item["ref_id"] = ref.id
            except Exception as err:
                return self._drop(cut.id, "reference", err)
            if self.ref_features:
                ref_sup = full.supervisions[0]
                ref_text = self.bpe.encode(ref_sup.text, ref_sup.language)
                item["ref_text_tokens"] = np.asarray(ref_text, dtype=np.int64)
                if not self._add_features(item, cut.id, full.id, self.ref_keys, prefix="ref_"):
                    return None
        return item if self._add_features(item, cut.id, cut.id, self.features) else None

    @property
    def ref_keys(self) -> list[str]:
        """The cached features a reference carries: all but the alignments (only the target's are read)."""
        return [key for key in self.features if key != ALIGNMENTS]

    def _add_features(
        self, item: dict, cut_id: str, source_id: str, keys: Iterable[str], prefix: str = ""
    ) -> bool:
        """Adds the cached features named in ``keys`` of cut ``source_id`` to ``item`` under
        ``<prefix><key>``; on a failure drops ``cut_id`` from its batch and returns False."""
        for key in keys:
            try:
                item[prefix + key] = self.features[key].load(source_id)
            except Exception as err:
                self._drop(cut_id, f"{'reference ' if prefix else ''}feature '{key}'", err)
                return False
        return True

    def __getitem__(self, cuts: CutSet) -> dict:
        """Builds a batch.

        Returns:
            A dict with ``ids``, ``texts``, ``speakers``, ``languages`` (lists of str), ``dropped`` (cuts of
            this batch that failed to load) and tensors
            ``audio (b, t)``, ``audio_lens (b,)``, ``audio_mask (b, t)``; ``text_tokens (b, n)`` padded with
            the BPE's pad id, ``text_lens``, ``text_mask``; with references ``ref_audio (b, r)``,
            ``ref_audio_lens``, ``ref_audio_mask``, ``ref_ids``; per cached feature ``<key> (b, k, ...)``,
            ``<key>_lens``, ``<key>_mask``; with ``ref_features`` also ``ref_text_tokens (b, n_r)``,
            ``ref_text_lens``, ``ref_text_mask`` and ``ref_<key>``, ``ref_<key>_lens``, ``ref_<key>_mask`` of
            the whole (uncropped) reference (every feature but the alignments); with alignments
            ``text_starts (b, n)`` (0-padded).
        """
        items, kept = [], []
        for cut in cuts:
            item = self._load(cut)
            if item is not None:
                items.append(item)
                kept.append(cut)
        if not items:
            raise RuntimeError(f"every cut of a {len(cuts)}-cut batch failed to load (see warnings above)")
        sups = [c.supervisions[0] for c in kept]
        batch: dict = {
            "ids": [c.id for c in kept],
            "texts": [s.text for s in sups],
            "speakers": [s.speaker for s in sups],
            "languages": [s.language for s in sups],
            "dropped": len(cuts) - len(kept),
        }
        batch["audio"], batch["audio_lens"], batch["audio_mask"] = pad_sequences([i["audio"] for i in items])
        tokens = [np.asarray(self.bpe.encode(s.text, s.language), dtype=np.int64) for s in sups]
        batch["text_tokens"], batch["text_lens"], batch["text_mask"] = pad_sequences(
            tokens, pad_value=self.bpe.pad_id
        )
        if self.references is not None:
            batch["ref_ids"] = [i["ref_id"] for i in items]
            ref = pad_sequences([i["ref_audio"] for i in items])
            batch["ref_audio"], batch["ref_audio_lens"], batch["ref_audio_mask"] = ref
        if self.ref_features:
            batch["ref_text_tokens"], batch["ref_text_lens"], batch["ref_text_mask"] = pad_sequences(
                [i["ref_text_tokens"] for i in items], pad_value=self.bpe.pad_id
            )
            for key in self.ref_keys:
                ref = pad_sequences([i[f"ref_{key}"] for i in items])
                batch[f"ref_{key}"], batch[f"ref_{key}_lens"], batch[f"ref_{key}_mask"] = ref
        for key in self.features:
            batch[key], batch[f"{key}_lens"], batch[f"{key}_mask"] = pad_sequences([i[key] for i in items])
        if ALIGNMENTS in self.features:
            starts = [self._text_starts(s, i) for s, i in zip(sups, items, strict=True)]
            batch[TEXT_STARTS] = pad_sequences(starts)[0]
        return batch

    def _text_starts(self, sup, item: dict) -> np.ndarray:
        """``(n,)`` the audio token where each BPE token of the supervision's text starts."""
        frames = item[ALIGNMENTS]
        end = len(item[TOKENS]) if TOKENS in item else int(frames.max(initial=-1)) + 1
        return text_starts(self.bpe, sup.text, sup.language, frames, end)
