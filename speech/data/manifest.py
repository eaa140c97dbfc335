"""Recipe records -> validated Lhotse cuts: bad data is skipped with a reason, never a crash.

Checks per utterance (reason codes in the reject log): ``empty_transcript``, ``missing_audio``,
``unreadable``, ``empty_audio``, ``bad_span``, ``low_sample_rate``, ``too_short``, ``too_long``,
``silent`` (with ``check_audio``) and ``single_utterance_speaker`` (when references are needed).
Fixable problems are fixed: other sample rates are resampled, multi-channel audio is downmixed.
Files of float samples (the only ones that can hold NaN or infinity, which would stop training with a NaN
loss) are always decoded and rejected as ``unreadable`` when they do; ``check_audio`` decodes every file.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import soundfile as sf
from lhotse import AudioSource, CutSet, MultiCut, Recording, SupervisionSegment
from lhotse.cut import Cut
from tqdm import tqdm

from speech.data.records import Utterance
from speech.data.rejects import RejectLog
from speech.text.normalize import normalize_text

EMOTION_KEY = "emotion"  # key of the emotion label in a supervision's ``custom``
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")  # libsndfile subtypes whose samples can be NaN or infinite


@dataclass(frozen=True)
class CutRules:
    """What a usable training utterance looks like.

    Attributes:
        sample_rate: Rate every cut is resampled to.
        min_duration: Shorter clips are skipped, seconds.
        max_duration: Longer clips are skipped, seconds.
        min_source_rate: Files recorded below this rate are skipped rather than upsampled.
        check_audio: Decode every file (slower) to catch corrupt data and digital silence up front.
        silence_rms: With ``check_audio``, clips whose RMS is below this are skipped as silent.
    """

    sample_rate: int = 16000
    min_duration: float = 0.5
    max_duration: float = 20.0
    min_source_rate: int = 16000
    check_audio: bool = False
    silence_rms: float = 1e-4


def _recording(utt: Utterance, info) -> Recording:
    return Recording(
        id=utt.id,
        sources=[AudioSource(type="file", channels=list(range(info.channels)), source=str(utt.audio_path))],
        sampling_rate=info.samplerate,
        num_samples=info.frames,
        duration=info.frames / info.samplerate,
    )


def _finite(path) -> bool:
    """Whether every sample of a readable file is finite (read in blocks: long files stay out of memory)."""
    return all(np.isfinite(block).all() for block in sf.blocks(str(path), blocksize=1 << 20, dtype="float32"))


def _problem(utt: Utterance, rules: CutRules) -> tuple[str, str, Cut | None]:
    """Returns ``("", "", cut)`` for a usable utterance or ``(reason, detail, None)``."""
    text = normalize_text(utt.text, utt.language) if utt.text else ""
    if not text.strip():
        return "empty_transcript", "transcript is empty", None
    if not utt.audio_path.is_file():
        return "missing_audio", f"{utt.audio_path} does not exist", None
    try:
        info = sf.info(str(utt.audio_path))
    except Exception as err:  # libsndfile raises several types for broken files
        return "unreadable", f"{utt.audio_path}: {err}", None
    if info.frames <= 0 or info.samplerate <= 0:
        return "empty_audio", f"{utt.audio_path} holds no samples", None
    if info.subtype in FLOAT_SUBTYPES and not rules.check_audio:
        try:
            finite = _finite(utt.audio_path)
        except Exception as err:  # libsndfile raises several types for broken files
            return "unreadable", f"{utt.audio_path}: {err}", None
        if not finite:
            return "unreadable", f"{utt.audio_path}: NaN or inf samples", None
    if info.samplerate < rules.min_source_rate:
        return "low_sample_rate", f"{info.samplerate} Hz < min_source_rate {rules.min_source_rate} Hz", None
    file_dur = info.frames / info.samplerate
    dur = file_dur - utt.start if utt.duration is None else utt.duration
    if utt.start < 0 or dur <= 0 or utt.start + dur > file_dur + 1e-3:
        return "bad_span", f"span {utt.start:.2f}+{dur:.2f}s outside a {file_dur:.2f}s file", None
    if dur < rules.min_duration:
        return "too_short", f"{dur:.2f}s < min_duration {rules.min_duration}s", None
    if dur > rules.max_duration:
        return "too_long", f"{dur:.2f}s > max_duration {rules.max_duration}s", None
    dur = min(dur, file_dur - utt.start)
    sup = SupervisionSegment(
        id=utt.id, recording_id=utt.id, start=0.0, duration=dur, channel=0,
        text=text, speaker=utt.speaker, language=utt.language,
        custom=None if utt.emotion is None else {EMOTION_KEY: utt.emotion},
    )  # fmt: skip
    cut = _recording(utt, info).to_cut().truncate(offset=utt.start, duration=dur, preserve_id=True)
    if isinstance(cut, MultiCut):
        cut = cut.to_mono(mono_downmix=True)
    cut = cut.with_id(utt.id)
    cut.supervisions = [sup]
    if info.samplerate != rules.sample_rate:
        cut = cut.resample(rules.sample_rate)
    if rules.check_audio:
        try:
            audio = cut.load_audio()
        except Exception as err:
            return "unreadable", f"{utt.audio_path}: {err}", None
        if not np.isfinite(audio).all():
            return "unreadable", f"{utt.audio_path}: NaN or inf samples", None
        rms = float(np.sqrt(np.mean(np.square(audio)))) if audio.size else 0.0
        if rms < rules.silence_rms:
            return "silent", f"RMS {rms:.2e} < silence_rms {rules.silence_rms}", None
    return "", "", cut


def build_cuts(
    utterances: Iterable[Utterance],
    rules: CutRules,
    rejects: RejectLog,
    *,
    progress: bool = True,
) -> CutSet:
    """Validates recipe records and turns the usable ones into mono cuts at ``rules.sample_rate``.

    Each cut has one supervision whose ``text`` is the front-end-normalized transcript; an utterance's
    ``emotion`` goes into the supervision's ``custom`` (read it with :func:`cut_emotion`).

    Args:
        utterances: Records from a recipe (``speech.data.recipes``).
        rules: Length and audio requirements.
        rejects: Receives one entry per skipped utterance.
        progress: Show a progress bar.
    """
    utterances = list(utterances)
    cuts = []
    for utt in tqdm(utterances, desc="validating audio", unit="utt", disable=not progress):
        reason, detail, cut = _problem(utt, rules)
        if cut is None:
            rejects.add(utt.id, reason, detail)
        else:
            cuts.append(cut)
    return CutSet.from_cuts(cuts)


def cut_language(cut: Cut) -> str | None:
    """The language of a cut from :func:`build_cuts` (its first supervision's), ``None`` when it has none."""
    return cut.supervisions[0].language if cut.supervisions else None


def cut_emotion(cut: Cut) -> str | None:
    """The emotion label of a cut from :func:`build_cuts` (e.g. ``"happy"``), ``None`` when it has none.

    Stored in the first supervision's ``custom``, so it survives writing the cuts to ``jsonl.gz`` and
    reading them back.
    """
    if not cut.supervisions:
        return None
    return (cut.supervisions[0].custom or {}).get(EMOTION_KEY)


def drop_single_utterance_speakers(cuts: CutSet, rejects: RejectLog) -> CutSet:
    """Removes speakers with one utterance: they cannot get a reference from a *different* utterance."""
    per_speaker = Counter(c.supervisions[0].speaker for c in cuts)
    keep = []
    for cut in cuts:
        if per_speaker[cut.supervisions[0].speaker] < 2:
            rejects.add(
                cut.id, "single_utterance_speaker", "speaker has no other utterance to use as reference"
            )
        else:
            keep.append(cut)
    return CutSet.from_cuts(keep)


def split_validation(cuts: CutSet, per_speaker: int, max_total: int, seed: int) -> tuple[CutSet, CutSet]:
    """Holds out up to ``per_speaker`` utterances of the training speakers for validation.

    Speakers keep at least two training utterances so references stay available. Deterministic for a seed.
    """
    by_speaker: dict[str, list[Cut]] = {}
    for cut in cuts:
        by_speaker.setdefault(cut.supervisions[0].speaker, []).append(cut)
    rng = np.random.default_rng(seed)
    speakers = sorted(by_speaker)
    rng.shuffle(speakers)
    val_ids: set[str] = set()
    budget = max_total
    for spk in speakers:
        pool = sorted(by_speaker[spk], key=lambda c: c.id)
        n = min(per_speaker, len(pool) - 2, budget)
        if n <= 0:
            continue
        for i in rng.choice(len(pool), size=n, replace=False):
            val_ids.add(pool[int(i)].id)
        budget -= n
        if budget <= 0:
            break
    train = CutSet.from_cuts(c for c in cuts if c.id not in val_ids)
    val = CutSet.from_cuts(c for c in cuts if c.id in val_ids)
    return train, val


def describe(cuts: CutSet) -> dict:
    """Counts and hours per language for a summary."""
    hours = Counter()
    utts = Counter()
    speakers: dict[str, set[str]] = {}
    for cut in cuts:
        sup = cut.supervisions[0]
        hours[sup.language] += cut.duration / 3600
        utts[sup.language] += 1
        speakers.setdefault(sup.language, set()).add(sup.speaker)
    durations = [c.duration for c in cuts]
    return {
        "utterances": len(durations),
        "speakers": len({c.supervisions[0].speaker for c in cuts}),
        "hours": round(sum(durations) / 3600, 4),
        "duration_min_mean_max": [
            round(min(durations), 2) if durations else math.nan,
            round(float(np.mean(durations)), 2) if durations else math.nan,
            round(max(durations), 2) if durations else math.nan,
        ],
        "per_language": {
            lang: {"utterances": utts[lang], "speakers": len(speakers[lang]), "hours": round(hours[lang], 4)}
            for lang in sorted(utts)
        },
    }
