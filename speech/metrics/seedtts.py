"""Seed-TTS-eval scoring: WER and SIM of generated wavs listed by a ``meta.lst``, with the ground-truth row.

For every meta entry ``utt|prompt_text|prompt_wav|target_text[|gt_wav]``:

- the **generated** row scores ``<gen_dir>/<utt>.wav``: WER of its transcript against ``target_text``
  (``speech.metrics.wer``) and SIM = cosine of speaker embeddings of the generated wav and the *prompt* wav;
- the **ground-truth** row (entries with ``gt_wav``) scores ``gt_wav`` the same way, so its SIM is
  cos(ground truth, prompt), as in the papers' "Ground Truth" rows. Backends that look transcripts up by
  id receive ``gt/<utt>`` for these items.

Unlike the protocol, which silently skips missing files, nothing is dropped without a count: the summary
lists missing and unreadable wavs per row, unreadable prompts (their items get a WER but no SIM), items
with an empty normalized reference (no WER) and bad meta lines (skipped via a ``RejectLog``). All audio is
read with ``load_audio`` at 16 kHz mono (resampled and downmixed as needed); silent audio is logged as a
warning and scored as it is.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from speech.audio.io import AudioError, load_audio, resample
from speech.data.meta_list import MetaEntry, read_meta_list
from speech.data.rejects import RejectLog
from speech.metrics.asr.base import ASR_SAMPLE_RATE, ASRBackend
from speech.metrics.asr.transcripts import GT_PREFIX
from speech.metrics.bootstrap import (
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    bootstrap_mean_ci,
    bootstrap_ratio_ci,
    bootstrap_ratio_difference_ci,
)
from speech.metrics.speaker.base import SIM_SAMPLE_RATE, SpeakerEmbedder
from speech.metrics.wer import score_utterance, word_errors
from speech.text.normalize import base_language

log = logging.getLogger(__name__)

GENERATED = "generated"
GROUND_TRUTH = "ground_truth"
#: Audio whose peak stays below this (-60 dBFS) is reported as silent.
SILENCE_PEAK = 1e-3
#: How many utterance ids per problem the markdown summary shows (the JSON lists them all).
MAX_LISTED = 20
#: The chance level of "words right" scores each transcript against this many other references (the next
#: ones, cyclic), sentences the audio does not say: what babble of the right length gets right.
CHANCE_REFERENCES = 30


@dataclass
class UtteranceRecord:
    """One scored wav: what was heard, how it compares, and the audio it came from."""

    utt: str
    row: str
    wav: str
    prompt_wav: str
    target_text: str
    transcript: str
    ref_norm: str
    hyp_norm: str
    wer: float | None
    substitutions: int
    deletions: int
    insertions: int
    ref_words: int
    sim: float | None
    duration_s: float
    prompt_duration_s: float | None
    silent: bool


@dataclass
class RowResult:
    """Records and bookkeeping of one row (generated or ground truth); ``unreadable`` maps utt -> reason."""

    name: str
    expected: list[str] = field(default_factory=list)
    records: list[UtteranceRecord] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    prompt_unreadable: dict[str, str] = field(default_factory=dict)


@dataclass
class SeedTTSResult:
    """Everything :func:`evaluate_seedtts` produced; ``summary`` is JSON-ready."""

    generated: RowResult
    ground_truth: RowResult | None
    rejects: RejectLog
    summary: dict

    @property
    def records(self) -> list[UtteranceRecord]:
        return self.generated.records + (self.ground_truth.records if self.ground_truth else [])


# ------------------------------------------------------------------------------------------------ scoring
def _load(path: Path, sample_rate: int) -> tuple[np.ndarray | None, str | None]:
    """``(wav, None)``, or ``(None, reason)`` for a missing or unreadable file."""
    try:
        wav, _ = load_audio(path, sample_rate=sample_rate)
    except AudioError as err:
        return None, str(err)
    return wav, None


def _record(
    row: str,
    entry: MetaEntry,
    path: Path,
    wav: np.ndarray,
    transcript: str,
    prompt_wav: np.ndarray | None,
    embedder: SpeakerEmbedder,
    language: str,
) -> UtteranceRecord:
    """Scores one transcribed wav: WER against the target text, SIM against the prompt (if readable)."""
    stats = score_utterance(entry.target_text, transcript, language)
    sim = None
    if prompt_wav is not None:
        sim = embedder.similarity(resample(wav, ASR_SAMPLE_RATE, SIM_SAMPLE_RATE), prompt_wav)
    peak = float(np.max(np.abs(wav)))
    if peak < SILENCE_PEAK:
        log.warning("%s: silent (peak %.1e < %.0e); scored as it is", path, peak, SILENCE_PEAK)
    return UtteranceRecord(
        utt=entry.utt,
        row=row,
        wav=str(path),
        prompt_wav=str(entry.prompt_wav),
        target_text=entry.target_text,
        transcript=transcript,
        ref_norm=stats.reference,
        hyp_norm=stats.hypothesis,
        wer=stats.wer,
        substitutions=stats.substitutions,
        deletions=stats.deletions,
        insertions=stats.insertions,
        ref_words=stats.ref_words,
        sim=None if sim is None else float(sim),
        duration_s=len(wav) / ASR_SAMPLE_RATE,
        prompt_duration_s=None if prompt_wav is None else len(prompt_wav) / SIM_SAMPLE_RATE,
        silent=peak < SILENCE_PEAK,
    )


def _score_batch(
    row: RowResult,
    items: Sequence[tuple[MetaEntry, Path, str]],
    prompts: dict[str, tuple[np.ndarray | None, str | None]],
    asr: ASRBackend,
    embedder: SpeakerEmbedder,
    language: str,
) -> None:
    """Loads ``(entry, wav path, ASR key)`` items, transcribes the readable ones in one call, scores them."""
    loaded = []
    for entry, path, key in items:
        row.expected.append(entry.utt)
        if not path.is_file():
            row.missing.append(entry.utt)
            continue
        wav, error = _load(path, ASR_SAMPLE_RATE)
        if wav is None:
            log.warning("%s row, %s: %s", row.name, entry.utt, error)
            row.unreadable[entry.utt] = error or "unreadable"
            continue
        loaded.append((entry, path, key, wav))
    if not loaded:
        return
    transcripts = asr.transcribe(
        [w for *_, w in loaded], language=language, utts=[k for _, _, k, _ in loaded]
    )
    if len(transcripts) != len(loaded):
        raise RuntimeError(
            f"ASR backend {asr.name!r} returned {len(transcripts)} transcripts for {len(loaded)} wavs"
        )
    for (entry, path, _, wav), text in zip(loaded, transcripts, strict=True):
        prompt_wav, prompt_error = prompts[entry.utt]
        if prompt_wav is None:
            row.prompt_unreadable[entry.utt] = prompt_error or "unreadable"
        row.records.append(_record(row.name, entry, path, wav, text, prompt_wav, embedder, language))


def evaluate_seedtts(
    meta: str | Path,
    gen_dir: str | Path,
    *,
    asr: ASRBackend,
    embedder: SpeakerEmbedder,
    language: str,
    batch_size: int = 8,
    ground_truth: bool = True,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    progress: bool = True,
) -> SeedTTSResult:
    """Scores the generated wavs of a Seed-TTS-eval test set (and its ground truth).

    Args:
        meta: The ``meta.lst``; bad lines are skipped and reported, the rest scored.
        gen_dir: Folder holding ``<utt>.wav`` per meta entry.
        asr: Transcribes for WER; must support ``language``.
        embedder: Speaker embeddings for SIM.
        language: Language of the test set (``en``, ``zh``, ...); selects normalization and ASR language.
        batch_size: Utterances per ASR call.
        ground_truth: Also score the meta's ``gt_wav`` files (when any entry has one).
        n_resamples: Bootstrap replicates of the confidence intervals.
        seed: Seed of the bootstrap.
        progress: Show a progress bar.

    Returns:
        Per-utterance records of both rows, their bookkeeping, the meta rejects and the summary
        (see :func:`summarize`).

    Raises:
        FileNotFoundError: ``meta`` or ``gen_dir`` does not exist.
        ValueError: ``asr`` cannot transcribe ``language``.
    """
    lang = base_language(language)
    if not asr.supports(lang):
        raise ValueError(
            f"ASR backend {asr.name!r} does not transcribe {lang!r} (it supports {sorted(asr.languages)})"
        )
    gen_dir = Path(gen_dir)
    if not gen_dir.is_dir():
        raise FileNotFoundError(f"folder of generated wavs not found: {gen_dir}")
    rejects = RejectLog()
    entries = read_meta_list(meta, rejects=rejects)
    for item, _, detail in rejects.entries:
        log.warning("skipped %s", detail or item)
    gen = RowResult(GENERATED)
    gt = RowResult(GROUND_TRUTH) if ground_truth and any(e.gt_wav for e in entries) else None
    with (
        logging_redirect_tqdm(),
        tqdm(total=len(entries), unit="utt", desc="seed-tts-eval", disable=not progress) as bar,
    ):
        for start in range(0, len(entries), batch_size):
            batch = entries[start : start + batch_size]
            prompts = {e.utt: _load(e.prompt_wav, SIM_SAMPLE_RATE) for e in batch}
            _score_batch(
                gen, [(e, gen_dir / f"{e.utt}.wav", e.utt) for e in batch], prompts, asr, embedder, lang
            )
            if gt is not None:
                items = [(e, e.gt_wav, GT_PREFIX + e.utt) for e in batch if e.gt_wav is not None]
                _score_batch(gt, items, prompts, asr, embedder, lang)
            bar.update(len(batch))
    info = {"meta": str(meta), "gen_dir": str(gen_dir), "language": lang}
    info |= {"asr": asr.name, "speaker": embedder.name}
    summary = summarize(gen, gt, rejects, info=info, n_resamples=n_resamples, seed=seed)
    return SeedTTSResult(gen, gt, rejects, summary)


# ------------------------------------------------------------------------------------------------ summary
def _ci(ci) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in ci.as_dict().items()}


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def words_right_by_chance(records: Sequence[UtteranceRecord]) -> tuple[list[float], list[float]]:
    """Per record, the words its transcript gets right against other utterances' references (the next
    ``CHANCE_REFERENCES``, cyclic, never its own), and their word count, each averaged over those
    references; empty for fewer than two records.

    Common words ("the", "a") and the transcript's length decide this figure, not the audio's content: a
    row's words right at this level says nothing of its text.
    """
    n = len(records)
    if n < 2:
        return [], []
    shifts = range(1, min(CHANCE_REFERENCES, n - 1) + 1)
    right, words = [], []
    for i, record in enumerate(records):
        others = [records[(i + shift) % n] for shift in shifts]
        right.append(float(np.mean([word_errors(o.ref_norm, record.hyp_norm).hits for o in others])))
        words.append(float(np.mean([o.ref_words for o in others])))
    return right, words


def summarize_row(row: RowResult, *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict:
    """Counts, problem lists and the headline numbers (each with a 95% bootstrap CI) of one row.

    WER values are fractions: ``wer`` is the utterance-averaged WER (the protocol's headline),
    ``corpus_wer`` total errors over total reference words, ``words_right`` the reference words the ASR
    got right (neither substituted nor deleted) over all reference words, each over ``n_wer`` utterances
    (those with a non-empty normalized reference), ``words_right_chance`` the same against other
    utterances' references (``words_right_by_chance``) and ``words_right_above_chance`` the first minus
    the second (a paired bootstrap: the same utterances for both); ``sim`` is the mean SIM over ``n_sim``
    utterances (readable prompt). ``words_right`` tells speech that is partly understood from babble when
    both score a WER near or above 100 % (insertions have no ceiling, deletions and substitutions do).
    A CI is ``{"estimate", "low", "high", "level"}``, with ``null`` when nothing was scored.
    """
    with_wer = [r for r in row.records if r.wer is not None]
    sims = [r.sim for r in row.records if r.sim is not None]
    kw = {"n_resamples": n_resamples, "seed": seed}
    errors = [r.substitutions + r.deletions + r.insertions for r in with_wer]
    words = [r.ref_words for r in with_wer]
    corpus = bootstrap_ratio_ci(errors, words, **kw)
    right = [r.ref_words - r.substitutions - r.deletions for r in with_wer]
    chance_right, chance_words = words_right_by_chance(with_wer)
    paired = (right, words, chance_right, chance_words) if chance_words else ([], [], [], [])
    return {
        "n_expected": len(row.expected),
        "n_scored": len(row.records),
        "n_missing": len(row.missing),
        "n_unreadable": len(row.unreadable),
        "n_wer": len(with_wer),
        "n_sim": len(sims),
        "wer": _ci(bootstrap_mean_ci([r.wer for r in with_wer], **kw)),
        "corpus_wer": _ci(corpus),
        "words_right": _ci(bootstrap_ratio_ci(right, words, **kw)),
        "words_right_chance": _ci(bootstrap_ratio_ci(chance_right, chance_words, **kw)),
        "words_right_above_chance": _ci(bootstrap_ratio_difference_ci(*paired, **kw)),
        "sim": _ci(bootstrap_mean_ci(sims, **kw)),
        "n_wer_above_0.5": sum(r.wer > 0.5 for r in with_wer),
        "mean_duration_s": _mean([r.duration_s for r in row.records]),
        "mean_prompt_duration_s": _mean(
            [r.prompt_duration_s for r in row.records if r.prompt_duration_s is not None]
        ),
        "missing": list(row.missing),
        "unreadable": dict(row.unreadable),
        "prompt_unreadable": dict(row.prompt_unreadable),
        "empty_reference": [r.utt for r in row.records if r.wer is None],
        "silent": [r.utt for r in row.records if r.silent],
    }


def summarize(
    generated: RowResult,
    ground_truth: RowResult | None,
    rejects: RejectLog,
    *,
    info: dict | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict:
    """The JSON summary: ``info`` fields, bootstrap settings, meta rejects and one block per row."""
    return {
        **(info or {}),
        "bootstrap": {"n_resamples": n_resamples, "level": DEFAULT_LEVEL, "seed": seed},
        "meta_rejects": [detail or f"{item}: {reason}" for item, reason, detail in rejects.entries],
        **{
            name: None if row is None else summarize_row(row, n_resamples=n_resamples, seed=seed)
            for name, row in ((GENERATED, generated), (GROUND_TRUTH, ground_truth))
        },
    }


# ------------------------------------------------------------------------------------------------ writers
def _fmt(ci: dict, scale: float, digits: int) -> str:
    if ci["estimate"] is None:
        return "n/a"
    est, low, high = (
        f"{ci[k] * scale:.{digits}f}" if ci[k] is not None else "n/a" for k in ("estimate", "low", "high")
    )
    return f"{est} [{low}, {high}]"


def _listed(utts: Sequence[str]) -> str:
    shown = ", ".join(utts[:MAX_LISTED])
    return shown + (f", ... ({len(utts) - MAX_LISTED} more)" if len(utts) > MAX_LISTED else "")


TABLE_HEADER = (
    "| row | scored / expected | WER (%) | corpus WER (%) | words right (%) | by chance (%) | above chance "
    "(points) | SIM |",
    "|---|---|---|---|---|---|---|---|",
)
NOT_SCORED = {"estimate": None}  # a summary written before a figure existed


def row_markdown(label: str, row: dict) -> str:
    """One table row (WER, words right and their chance level in percent with CIs, SIM as a cosine) of a
    summarized row."""
    return (
        f"| {label} | {row['n_scored']} / {row['n_expected']} | {_fmt(row['wer'], 100, 2)} | "
        f"{_fmt(row['corpus_wer'], 100, 2)} | {_fmt(row.get('words_right', NOT_SCORED), 100, 1)} | "
        f"{_fmt(row.get('words_right_chance', NOT_SCORED), 100, 1)} | "
        f"{_fmt(row.get('words_right_above_chance', NOT_SCORED), 100, 1)} | {_fmt(row['sim'], 1, 3)} |"
    )


def comparison_markdown(summaries: dict[str, dict], truth: dict | None = None) -> str:
    """One table comparing the generated rows of several runs on the same test set (``label -> summary``).

    The ground-truth row (``truth``, a summary's ground-truth entry, else the first run's that has one) comes
    first, and each run's WER is also given relative to it (``x1.50``: half as many errors again as the
    ground truth scores with the same judge).
    """
    if truth is None:
        truth = next((s[GROUND_TRUTH] for s in summaries.values() if s.get(GROUND_TRUTH)), None)
    if truth is None:
        return (
            "\n".join([*TABLE_HEADER, *(row_markdown(k, s[GENERATED]) for k, s in summaries.items())]) + "\n"
        )
    lines = [TABLE_HEADER[0] + " WER / truth |", TABLE_HEADER[1] + "---|"]
    lines.append(row_markdown("ground truth", truth) + " x1.00 |")
    for label, summary in summaries.items():
        lines.append(row_markdown(label, summary[GENERATED]) + f" {_relative(summary[GENERATED], truth)} |")
    return "\n".join(lines) + "\n"


def _relative(row: dict, truth: dict) -> str:
    """A row's mean WER over the ground truth's, as ``x1.23`` (``n/a`` when either is missing or zero)."""
    wer, base = row["wer"].get("estimate"), truth["wer"].get("estimate")
    if wer is None or not base:
        return "n/a"
    return f"x{wer / base:.2f}"


def summary_markdown(summary: dict) -> str:
    """The summary as a markdown table (WER in percent, SIM as a cosine) plus a list of problems."""
    boot = summary["bootstrap"]
    lines = [
        f"# Seed-TTS-eval: {summary.get('meta', '')}",
        "",
        f"ASR `{summary.get('asr')}`, speaker model `{summary.get('speaker')}`, "
        f"language `{summary.get('language')}`. Brackets: {round(boot['level'] * 100)}% bootstrap CI over "
        f"utterances ({boot['n_resamples']} resamples, seed {boot['seed']}). WER is the mean of "
        "per-utterance WERs (the protocol's headline); corpus WER is total errors / total reference words; "
        "words right is the reference words neither substituted nor deleted / total reference words; "
        f"by chance is the same against {CHANCE_REFERENCES} other utterances' references; above chance is "
        "the difference, in percentage points, with a paired interval (zero inside it: no words beyond what "
        "babble of that length gets). SIM is against the prompt wav.",
        "",
        *TABLE_HEADER,
    ]
    problems = [f"- bad meta line skipped: {line}" for line in summary["meta_rejects"]]
    for key, label in ((GENERATED, "generated"), (GROUND_TRUTH, "ground truth")):
        row = summary.get(key)
        if row is None:
            continue
        lines.append(row_markdown(label, row))
        for name in ("missing", "unreadable", "prompt_unreadable", "empty_reference", "silent"):
            if row[name]:
                problems.append(
                    f"- {label}: {len(row[name])} {name.replace('_', ' ')}: {_listed(list(row[name]))}"
                )
    if problems:
        lines += ["", "## Problems", "", *problems]
    return "\n".join(lines) + "\n"


def write_records(path: str | Path, records: Sequence[UtteranceRecord]) -> Path:
    """Writes one JSON object per utterance record (UTF-8, one line each)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
    return path


def write_outputs(result: SeedTTSResult, out_dir: str | Path) -> dict[str, Path]:
    """Writes ``utterances.jsonl``, ``summary.json``, ``summary.md`` and (if any) ``meta_rejects.tsv``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"records": write_records(out / "utterances.jsonl", result.records)}
    paths["summary_json"] = out / "summary.json"
    paths["summary_json"].write_text(
        json.dumps(result.summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    paths["summary_md"] = out / "summary.md"
    paths["summary_md"].write_text(summary_markdown(result.summary), encoding="utf-8")
    if len(result.rejects):
        paths["meta_rejects"] = result.rejects.write(out / "meta_rejects.tsv")
    return paths
