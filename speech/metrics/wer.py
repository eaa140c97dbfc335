"""Word error rate as Seed-TTS-eval computes it, plus the corpus-level figure beside it.

Per utterance: ``jiwer`` word alignment of the normalized reference and transcript (``process_words`` is
what the protocol's ``compute_measures`` calls in jiwer 3; jiwer 4 removed the latter, hence ``jiwer<4``).

Two averages over a test set:

- **utterance-averaged WER** (:func:`utterance_wer`): the mean of the per-utterance WERs. This is the
  protocol's headline (``average_wer.py``) and what papers report; a 3-word utterance weighs as much as a
  30-word one.
- **corpus WER** (:func:`corpus_wer`): total errors over total reference words, the usual ASR figure.

Empty strings (after normalization):

- empty reference (e.g. a target text of only punctuation): WER is undefined; :attr:`WerStats.wer` is
  ``None`` and the utterance is left out of both averages. Callers count such utterances (the Seed-TTS
  runner reports ``n_empty_reference``); the protocol would crash in ``jiwer`` here.
- empty transcript with a non-empty reference (silence, a failed ASR): every word is a deletion, WER 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jiwer

from speech.text.wer_norm import normalize_for_wer


@dataclass(frozen=True)
class WerStats:
    """Alignment counts of one utterance.

    Attributes:
        reference: Normalized reference tokens joined by spaces.
        hypothesis: Normalized transcript tokens joined by spaces.
        wer: ``(S + D + I) / N``, or ``None`` when the reference is empty.
        substitutions: S.
        deletions: D.
        insertions: I.
        hits: Correct tokens.
        ref_words: N, the number of reference tokens (characters for zh/ja).
    """

    reference: str
    hypothesis: str
    wer: float | None
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    ref_words: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions


def word_errors(reference: str, hypothesis: str) -> WerStats:
    """Aligns two already-normalized strings (tokens separated by whitespace)."""
    ref_tokens, hyp_tokens = reference.split(), hypothesis.split()
    if not ref_tokens:
        return WerStats(reference, hypothesis, None, 0, 0, len(hyp_tokens), 0, 0)
    if not hyp_tokens:
        n = len(ref_tokens)
        return WerStats(reference, hypothesis, 1.0, 0, n, 0, 0, n)
    out = jiwer.process_words(" ".join(ref_tokens), " ".join(hyp_tokens))
    return WerStats(
        reference=reference,
        hypothesis=hypothesis,
        wer=float(out.wer),
        substitutions=out.substitutions,
        deletions=out.deletions,
        insertions=out.insertions,
        hits=out.hits,
        ref_words=len(ref_tokens),
    )


def score_utterance(reference: str, transcript: str, language: str) -> WerStats:
    """Normalizes both texts with :func:`normalize_for_wer` and aligns them."""
    return word_errors(normalize_for_wer(reference, language), normalize_for_wer(transcript, language))


def _scored(stats: Sequence[WerStats]) -> list[WerStats]:
    return [s for s in stats if s.wer is not None]


def utterance_wer(stats: Sequence[WerStats]) -> float:
    """Mean per-utterance WER over utterances with a non-empty reference (the protocol's headline).

    Returns:
        A fraction (multiply by 100 for the protocol's percent); NaN when nothing was scored.
    """
    scored = _scored(stats)
    return sum(s.wer for s in scored) / len(scored) if scored else float("nan")


def corpus_wer(stats: Sequence[WerStats]) -> float:
    """Total errors over total reference words, over the same utterances as :func:`utterance_wer`.

    Returns:
        A fraction; NaN when nothing was scored.
    """
    scored = _scored(stats)
    words = sum(s.ref_words for s in scored)
    return sum(s.errors for s in scored) / words if words else float("nan")
