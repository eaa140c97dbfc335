"""The deterministic plan of a corpus: its speakers (train/test) and what each of them says.

Speakers:

- every *training* base voice once as itself, plus WORLD warps of training voices (round robin in a seeded
  order, each voice ``warp_engine_weights[engine]`` times per round) until ``speakers.num_train``;
- *test* speakers: the held-out base voices as themselves (whole voices never heard in training, with every
  voice of the same person: those named, ``num_heldout_espeak`` espeak-ng variants and
  ``num_heldout_kokoro`` Kokoro mixtures drawn at random), and ``num_unseen_warps`` new warps of training
  voices whose warp parameters lie at least ``warp.min_distance`` away from every training warp of that voice.

Utterances: training speakers say sentences from the training part of each language's pool, in languages
drawn by ``utterances.language_weights``; test speakers say held-out sentences, ``test_en_per_speaker`` in
English and ``test_multi_per_speaker`` in each other language they speak. Every random choice comes from a
generator seeded by ``(seed, purpose, name)``, so the same config and seed give the same plan.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from speech.data.synthetic.config import CorpusConfig
from speech.data.synthetic.kokoro_voices import MIXTURE_PREFIX
from speech.data.synthetic.text_sources import SentencePool
from speech.data.synthetic.voices import BaseVoice
from speech.data.synthetic.warp import Warp, sample_warp, warp_distance

MAX_WARP_TRIES = 1000


def rng_for(seed: int, *tags: str) -> np.random.Generator:
    """A generator for one purpose: stable across runs and processes (no Python ``hash``)."""
    return np.random.default_rng([seed, *(zlib.crc32(tag.encode()) for tag in tags)])


@dataclass(frozen=True)
class Speaker:
    """A corpus speaker: a base voice, possibly warped.

    Attributes:
        id: Corpus-unique id: the base voice name, plus ``-w<k>`` for its k-th warp.
        base: The base voice.
        warp: The WORLD warp (identity for the base voice itself).
        split: ``"train"`` or ``"test"``.
        heldout: Why a test speaker is unseen: ``"voice"`` (its base voice is held out) or ``"warp"``
            (a new warp of a training voice); ``""`` for training speakers.
    """

    id: str
    base: BaseVoice
    warp: Warp
    split: str
    heldout: str = ""

    @property
    def languages(self) -> tuple[str, ...]:
        return self.base.languages

    def to_dict(self) -> dict[str, Any]:
        """The speaker's plan and manifest fields; Kokoro speakers add ``kokoro_voice`` (weights, speed)."""
        record = {
            "speaker": self.id,
            "split": self.split,
            "heldout": self.heldout,
            "engine": self.base.engine,
            "base_voice": self.base.name,
            "engine_voice": self.base.voice,
            "identity": self.base.identity,
            "gender": self.base.gender,
            "package": self.base.package,
            "languages": list(self.languages),
            "warp": self.warp.to_dict(),
        }
        if self.base.kokoro is not None:  # other engines' lines stay as they were: no re-render on resume
            record["kokoro_voice"] = self.base.kokoro.to_dict()
        return record


@dataclass(frozen=True)
class PlannedUtterance:
    """One utterance to synthesize; ``text`` is exactly what the voice says (normalized)."""

    id: str
    speaker: Speaker
    language: str
    text: str

    @property
    def split(self) -> str:
        return self.speaker.split

    @property
    def path(self) -> str:
        """Audio path relative to the corpus root."""
        return f"wavs/{self.speaker.id}/{self.id}.wav"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "language": self.language, "text": self.text, "path": self.path,
                **self.speaker.to_dict()}  # fmt: skip


def plan_speakers(bases: list[BaseVoice], config: CorpusConfig) -> list[Speaker]:
    """Splits the base voices into training and held-out ones and adds the warped speakers.

    Raises:
        ValueError: a held-out voice is not among ``bases``, or there are more training base voices than
            ``speakers.num_train``, or too few espeak-ng variants to hold out.
    """
    cfg = config.speakers
    heldout_identities = _heldout_identities(bases, config)
    train_bases = [b for b in bases if b.identity not in heldout_identities]
    test_bases = [b for b in bases if b.identity in heldout_identities]
    if len(train_bases) > cfg.num_train:
        raise ValueError(
            f"{len(train_bases)} training base voices but speakers.num_train={cfg.num_train}: raise "
            "num_train or list fewer voices (voices.espeak_variants)"
        )
    if not train_bases:
        raise ValueError("every base voice is held out; no training speakers are left")
    speakers = [Speaker(b.name, b, Warp(), "train") for b in train_bases]
    warps: dict[str, list[Warp]] = defaultdict(list)
    slots = [b for b in train_bases for _ in range(cfg.warp_engine_weights.get(b.engine, 1))]
    order = rng_for(config.seed, "warp-order").permutation(len(slots))
    rng = rng_for(config.seed, "train-warps")
    for k in range(cfg.num_train - len(train_bases)):
        base = slots[order[k % len(order)]]
        warp = _new_warp(rng, config, base, [Warp(), *warps[base.name]])
        warps[base.name].append(warp)
        speakers.append(Speaker(f"{base.name}-w{len(warps[base.name]):02d}", base, warp, "train"))
    speakers += [Speaker(b.name, b, Warp(), "test", heldout="voice") for b in test_bases]
    rng = rng_for(config.seed, "unseen-warps")
    n_unseen = min(cfg.num_unseen_warps, len(train_bases))
    for i in sorted(rng.choice(len(train_bases), size=n_unseen, replace=False)):
        base = train_bases[i]
        warp = _new_warp(rng, config, base, [Warp(), *warps[base.name]])
        warps[base.name].append(warp)
        speakers.append(Speaker(f"{base.name}-w{len(warps[base.name]):02d}", base, warp, "test", "warp"))
    return sorted(speakers, key=lambda s: s.id)


def _heldout_identities(bases: list[BaseVoice], config: CorpusConfig) -> set[str]:
    by_name = {b.name: b for b in bases}
    unknown = sorted(set(config.speakers.heldout_voices) - set(by_name))
    if unknown:
        raise ValueError(
            f"held-out voices {unknown} are not configured base voices; known: {sorted(by_name)}"
        )
    identities = {by_name[n].identity for n in config.speakers.heldout_voices}
    espeak = [b for b in bases if b.engine == "espeak-ng" and b.identity not in identities]
    n = config.speakers.num_heldout_espeak
    if n and n > len(espeak) - 1:  # holding out none is fine when there is no espeak-ng voice at all
        raise ValueError(f"cannot hold out {n} of {len(espeak)} espeak-ng variants and keep one for training")
    chosen = rng_for(config.seed, "heldout-espeak").choice(len(espeak), size=n, replace=False)
    identities |= {espeak[i].identity for i in chosen}
    mixtures = [b for b in bases if b.engine == "kokoro" and b.voice.startswith(MIXTURE_PREFIX)]
    mixtures = [b for b in mixtures if b.identity not in identities]
    n = config.speakers.num_heldout_kokoro
    if n > len(mixtures):
        raise ValueError(
            f"cannot hold out {n} Kokoro mixtures, there are {len(mixtures)}: "
            "raise voices.kokoro.num_mixtures"
        )
    chosen = rng_for(config.seed, "heldout-kokoro").choice(len(mixtures), size=n, replace=False)
    return identities | {mixtures[i].identity for i in chosen}


def _new_warp(rng: np.random.Generator, config: CorpusConfig, base: BaseVoice, taken: list[Warp]) -> Warp:
    for _ in range(MAX_WARP_TRIES):
        warp = sample_warp(rng, config.warp)
        if all(warp_distance(warp, other, config.warp) >= config.warp.min_distance for other in taken):
            return warp
    raise ValueError(
        f"no room for warp {len(taken)} of {base.name}: none of {MAX_WARP_TRIES} draws lies "
        f"warp.min_distance={config.warp.min_distance} away from the others; widen the warp ranges, lower "
        "min_distance or speakers.warp_engine_weights, or add base voices"
    )


def plan_utterances(
    speakers: list[Speaker], pools: dict[str, SentencePool], config: CorpusConfig
) -> list[PlannedUtterance]:
    """Says which sentences each speaker reads, in which language. Sorted by utterance id."""
    cfg = config.utterances
    train_text = {lang: _cycle(pool.train) for lang, pool in pools.items()}
    test_text = {lang: _cycle(pool.heldout) for lang, pool in pools.items()}
    planned: list[PlannedUtterance] = []
    for speaker in speakers:
        if speaker.split == "train":
            rng = rng_for(config.seed, "languages", speaker.id)
            langs = [lang for lang in speaker.languages if lang in pools]
            weights = np.array([cfg.language_weights.get(lang, 0.0) for lang in langs], dtype=np.float64)
            if weights.sum() <= 0:
                weights = np.ones(len(langs))
            drawn = rng.choice(len(langs), size=cfg.per_train_speaker, p=weights / weights.sum())
            wanted = [langs[i] for i in drawn]
            planned += _utterances(speaker, sorted(wanted), train_text)
        else:
            wanted = []
            for lang in speaker.languages:
                if lang in pools:
                    n = cfg.test_en_per_speaker if lang == "en" else cfg.test_multi_per_speaker
                    wanted += [lang] * n
            planned += _utterances(speaker, wanted, test_text)
    return sorted(planned, key=lambda u: u.id)


def _utterances(
    speaker: Speaker, languages: list[str], texts: dict[str, Iterator[str]]
) -> list[PlannedUtterance]:
    counts: dict[str, int] = defaultdict(int)
    said: set[str] = set()
    out = []
    for lang in languages:
        text = next(texts[lang])
        for _ in range(100):  # a speaker never says one sentence twice while the pool has others
            if text not in said:
                break
            text = next(texts[lang])
        said.add(text)
        counts[lang] += 1
        out.append(PlannedUtterance(f"{speaker.id}-{lang}-{counts[lang]:03d}", speaker, lang, text))
    return out


def _cycle(sentences: list[str]) -> Iterator[str]:
    if not sentences:
        raise ValueError("a sentence pool is empty: raise text.max_sentences_per_language")
    while True:
        yield from sentences
