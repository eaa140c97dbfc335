"""Emotive renditions (speech.data.synthetic.emotions, emotion_corpus): the styles move prosody the way they
claim, and a micro corpus built from a fake two-speaker source goes through the real code path (espeak-ng,
WORLD) into the manifest, the recipe and Lhotse cuts with its emotion labels."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speech.audio.io import resample, save_audio
from speech.audio.prosody import measure_prosody as measure
from speech.data.manifest import CutRules, build_cuts, cut_emotion
from speech.data.recipes.synthetic import load_synthetic
from speech.data.records import Utterance
from speech.data.rejects import RejectLog
from speech.data.synthetic import EMOTIONS, STYLES, EmotionCorpusConfig, apply_emotion, build_emotion_corpus
from speech.data.synthetic import emotion_corpus as emotion_corpus_module
from speech.data.synthetic.emotion_corpus import pick_sources
from speech.data.synthetic.emotions import TREMOLO_HZ, EmotionStyle, breathe, style_f0

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or importlib.util.find_spec("pyworld") is None,
    reason="needs espeak-ng (scripts/system_packages.txt) and pyworld (the corpus extra)",
)

SR = 16000
SENTENCES = [
    "A warm hello to all of you out there today.",
    "The early bird gets the worm, but the second mouse gets the cheese.",
    "Make it work, then make it right, then make it fast.",
]


def espeak(voice: str, text: str) -> np.ndarray:
    from speech.data.synthetic.engines import synthesize

    wav, sr = synthesize("espeak-ng", voice, "en", text)
    return resample(wav, sr, SR)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return espeak("m7", SENTENCES[0])


@pytest.fixture(scope="module")
def neutral(clip) -> np.ndarray:
    return apply_emotion(clip, SR, STYLES["neutral"])


def log_f0_spread(wav: np.ndarray) -> float:
    from speech.audio.world import f0_contour

    f0 = f0_contour(wav, SR)
    return float(np.std(np.log(f0[f0 > 0])))


@pytest.mark.parametrize("emotion", EMOTIONS)
def test_each_style_moves_pitch_range_and_rate_its_way(neutral, clip, emotion):
    style = STYLES[emotion]
    styled = apply_emotion(clip, SR, style)
    (f0_n, dur_n, _), (f0_s, dur_s, _) = measure(neutral, SR), measure(styled, SR)
    assert f0_s / f0_n == pytest.approx(style.pitch, rel=0.04)
    assert dur_s / dur_n == pytest.approx(1 / style.rate, abs=0.01)
    if not style.tremolo and not style.final_rise:  # both widen the spread on their own
        assert log_f0_spread(styled) / log_f0_spread(neutral) == pytest.approx(style.pitch_range, rel=0.2)


def test_styles_are_distinct_and_neutral_changes_nothing(clip, neutral):
    assert set(STYLES) == {"neutral", *EMOTIONS} and STYLES["neutral"].is_identity
    assert len(set(STYLES.values())) == len(STYLES)
    (f0_in, dur_in, rms_in), (f0_out, dur_out, rms_out) = measure(clip, SR), measure(neutral, SR)
    assert f0_out == pytest.approx(f0_in, rel=0.02)
    assert dur_out == pytest.approx(dur_in, abs=0.01)
    assert rms_out == pytest.approx(rms_in, abs=1.0)
    f0 = np.array([0.0, 100.0, 120.0, 0.0, 150.0])
    np.testing.assert_allclose(style_f0(f0, STYLES["neutral"], frame_period_ms=5.0), f0, rtol=1e-12)


def test_style_f0_range_tremolo_and_final_rise():
    f0 = np.array([0.0, 100.0, 200.0, 0.0, 400.0])
    out = style_f0(f0, EmotionStyle(pitch=1.5, pitch_range=0.5), frame_period_ms=5.0)
    np.testing.assert_allclose(out, [0.0, 1.5 * 200 / math.sqrt(2), 300.0, 0.0, 1.5 * 200 * math.sqrt(2)])

    flat = np.full(400, 100.0)  # 2 s of 5 ms frames
    shaky = style_f0(flat, EmotionStyle(rate=2.0, tremolo=0.1), frame_period_ms=5.0)
    assert shaky.max() == pytest.approx(110.0, rel=1e-3) and shaky.min() == pytest.approx(90.0, rel=1e-3)
    # timed in the output (frames 2.5 ms apart at rate 2): the tremor stays at TREMOLO_HZ
    spectrum = np.abs(np.fft.rfft(shaky - shaky.mean()))
    assert np.fft.rfftfreq(flat.size, d=0.0025)[np.argmax(spectrum)] == pytest.approx(TREMOLO_HZ, abs=0.5)

    rising = style_f0(flat, EmotionStyle(final_rise=12.0), frame_period_ms=5.0)
    assert rising[-1] == pytest.approx(200.0)
    np.testing.assert_allclose(rising[:-80], 100.0)  # the rise spans the last 0.4 s only
    assert np.all(np.diff(rising[-80:]) > 0)


def test_breathiness_moves_voiced_aperiodicity_towards_noise():
    ap = np.full((3, 4), 0.2)
    out = breathe(ap, np.array([True, False, True]), 0.5)
    np.testing.assert_allclose(out[[0, 2]], 0.6)
    np.testing.assert_allclose(out[1], 0.2)
    assert breathe(ap, np.array([True, True, True]), 0.0) is ap


def test_invalid_styles_and_emotion_names_are_refused():
    with pytest.raises(ValueError, match=r"unknown emotion\(s\) \['joyful'\].*known: \['neutral', 'happy'"):
        EmotionCorpusConfig.from_dict({"emotions": ["happy", "joyful"]})
    with pytest.raises(ValueError, match=r"lists \['sad'\] more than once"):
        EmotionCorpusConfig(emotions=["sad", "neutral", "sad"])
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['source'\] in emotion_corpus"):
        EmotionCorpusConfig.from_dict({"source": "data/synthetic_tiny"})
    with pytest.raises(ValueError, match=r"num_speakers must be >= 1, got 0"):
        EmotionCorpusConfig(num_speakers=0)
    with pytest.raises(ValueError, match=r"tremolo must be in \[0, 1\), got 1.5"):
        EmotionStyle(tremolo=1.5)
    assert EmotionCorpusConfig(emotions=["sad"]).emotions == ["neutral", "sad"]


def fake_records(speakers: int, utts: int) -> list[dict]:
    """Speaker ``s<i>`` has ``utts - 1``, ``utts`` or ``utts + 1`` English training utterances (``i % 3``),
    4 German ones and 4 English test ones."""
    return [
        {"id": f"s{s}-{lang}-{u:03d}", "speaker": f"s{s}", "language": lang, "split": split}
        for s in range(speakers)
        for split, lang, n in (("train", "en", utts + s % 3 - 1), ("train", "de", 4), ("test", "en", 4))
        for u in range(n)
    ]


def test_pick_sources_draws_eligible_training_speakers_with_the_seed():
    records = fake_records(10, 4)
    config = EmotionCorpusConfig(seed=5, num_speakers=4, utts_per_speaker=4)
    picked = pick_sources(records, config)
    assert len(picked) == 16 and all(r["split"] == "train" and r["language"] == "en" for r in picked)
    speakers = sorted({r["speaker"] for r in picked})
    assert len(speakers) == 4 and all(int(s[1:]) % 3 != 0 for s in speakers)  # s0, s3, s6, s9 have 3
    assert pick_sources(records, config) == picked
    assert pick_sources(records, replace(config, seed=6)) != picked
    with pytest.raises(ValueError, match=r"has 6 training speakers with >= 4 utterances in \['en'\]"):
        pick_sources(records, replace(config, num_speakers=7))


def write_source(root: Path) -> list[dict]:
    """A two-speaker source corpus in the synthetic corpus's format, plus a test speaker never drawn."""
    records = []
    for speaker, voice, split in (
        ("espeak-f3", "f3", "train"),
        ("espeak-m7", "m7", "train"),
        ("t", "f5", "test"),
    ):
        for i, text in enumerate(SENTENCES[:2]):
            wav = espeak(voice, text)
            path = f"wavs/{speaker}/{speaker}-en-{i:03d}.wav"
            save_audio(root / path, wav, SR)
            records.append(
                {"id": Path(path).stem, "speaker": speaker, "language": "en", "text": text, "split": split,
                 "path": path, "sample_rate": SR, "num_samples": wav.size, "duration": wav.size / SR,
                 "engine": "espeak-ng", "warp": {"pitch": 1.0, "formant": 1.0, "rate": 1.0}}
            )  # fmt: skip
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return records


CONFIG = EmotionCorpusConfig(seed=0, emotions=["sad", "happy", "angry"], num_speakers=2, utts_per_speaker=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("emotion")
    sources = write_source(base / "source")
    stats = build_emotion_corpus(base / "source", base / "emo", CONFIG, num_workers=2, progress=False)
    return base, sources, stats


def manifest(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def test_micro_corpus_renders_every_source_in_every_emotion(corpus):
    base, sources, stats = corpus
    records = manifest(base / "emo")
    by_id = {r["id"]: r for r in sources}
    train = [r["id"] for r in sources if r["split"] == "train"]
    assert sorted(r["id"] for r in records) == sorted(
        f"{s}-{e}" for s in train for e in ["neutral", "sad", "happy", "angry"]
    )
    for r in records:
        src = by_id[r["source_id"]]
        assert r["id"] == f"{src['id']}-{r['emotion']}" and r["split"] == "train"
        assert (r["speaker"], r["text"], r["engine"]) == (src["speaker"], src["text"], "espeak-ng")
        assert (
            r["path"] == f"wavs/{src['speaker']}/{r['id']}.wav"
            and r["style"] == STYLES[r["emotion"]].to_dict()
        )
        info = sf.info(str(base / "emo" / r["path"]))
        assert (info.samplerate, info.subtype, info.frames) == (SR, "PCM_16", r["num_samples"])
    assert (base / "emo" / "rejects.tsv").read_text() == ""
    assert json.loads((base / "emo" / "stats.json").read_text()) == stats


def test_stats_show_the_styles_apart(corpus):
    _, _, stats = corpus
    per = stats["emotions"]
    assert list(per) == ["neutral", "sad", "happy", "angry"] and stats["renditions"] == 16
    assert all(per[e]["count"] == 4 for e in per) and stats["speakers"] == 2
    assert per["happy"]["median_f0_hz"] > per["neutral"]["median_f0_hz"] > per["sad"]["median_f0_hz"]
    assert per["neutral"]["median_duration_ratio"] == 1.0
    assert per["sad"]["median_duration_ratio"] > 1.2 and per["happy"]["median_duration_ratio"] < 0.95
    rms = {e: per[e]["median_rms_db"] for e in per}
    assert rms["angry"] > rms["happy"] > rms["neutral"] > rms["sad"]
    assert rms["neutral"] - rms["sad"] == pytest.approx(5.0, abs=1.5)  # the loudness target moved by gain_db
    assert stats["config"]["emotions"] == ["neutral", "sad", "happy", "angry"]


def test_load_synthetic_and_cuts_keep_the_emotion(corpus, tmp_path):
    base, _, _ = corpus
    utterances = load_synthetic(base / "emo")
    expected = {r["id"]: r["emotion"] for r in manifest(base / "emo")}
    assert {u.id: u.emotion for u in utterances} == expected
    plain = Utterance(
        id="plain", audio_path=utterances[0].audio_path, text="Hello there.", speaker="x", language="en"
    )
    cuts = build_cuts([*utterances, plain], CutRules(), RejectLog(), progress=False)
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    from lhotse import CutSet

    back = {c.id: cut_emotion(c) for c in CutSet.from_file(tmp_path / "cuts.jsonl.gz")}
    assert back == {**expected, "plain": None}


def test_rerun_renders_only_what_is_missing_or_changed(corpus, tmp_path, monkeypatch):
    base, _, _ = corpus
    root = tmp_path / "emo"
    shutil.copytree(base / "emo", root)
    records = manifest(root)
    deleted, failing = records[1], records[6]
    original = (root / deleted["path"]).read_bytes()
    (root / deleted["path"]).unlink()
    (root / failing["path"]).unlink()
    rendered, fail_once = [], {failing["id"]}
    render_one = emotion_corpus_module._render_one

    def spy(features, emotion, task):
        rendered.append(f"{task.source_id}-{emotion}")
        if rendered[-1] in fail_once:  # WORLD fails on this one this time
            fail_once.clear()
            return "world_failed", "RuntimeError: boom"
        return render_one(features, emotion, task)

    monkeypatch.setattr(emotion_corpus_module, "_render_one", spy)
    build_emotion_corpus(base / "source", root, CONFIG, num_workers=1, progress=False)
    assert sorted(rendered) == sorted([deleted["id"], failing["id"]])
    assert (root / deleted["path"]).read_bytes() == original  # same bytes as the worker process made
    assert failing["id"] not in {r["id"] for r in manifest(root)}
    assert (root / "rejects.tsv").read_text() == f"{failing['id']}\tworld_failed\tRuntimeError: boom\n"

    rendered.clear()
    build_emotion_corpus(base / "source", root, CONFIG, num_workers=1, progress=False)
    assert rendered == [failing["id"]]  # a failed rendition is retried, nothing else
    assert failing["id"] in {r["id"] for r in manifest(root)} and (root / "rejects.tsv").read_text() == ""
    rendered.clear()
    build_emotion_corpus(base / "source", root, CONFIG, num_workers=1, progress=False)
    assert rendered == []
    louder = replace(CONFIG, audio=replace(CONFIG.audio, loudness_db=-20.0))
    build_emotion_corpus(base / "source", root, louder, num_workers=1, progress=False)
    assert len(rendered) == 16  # the plan changed for every rendition
    assert not list(root.rglob("*.part.wav"))


def test_missing_source_corpus_names_the_command_that_builds_it(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"python scripts/corpus/make_synthetic_corpus.py data=synthetic_tiny"
    ):
        build_emotion_corpus(tmp_path / "synthetic_tiny", tmp_path / "emo", CONFIG, progress=False)


def test_emotion_corpus_config_composes():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose("entry/make_emotion_corpus")
        prepare = compose("entry/prepare_data", overrides=["data=synthetic_emotion_tiny"])
    settings = OmegaConf.to_container(cfg.data.emotion_corpus, resolve=True)
    assert settings.pop("source").endswith("data/synthetic_tiny")
    config = EmotionCorpusConfig.from_dict(settings)
    assert config.emotions == ["neutral", *EMOTIONS] and config.languages == ["en"]
    assert (config.num_speakers, config.utts_per_speaker) == (24, 6)
    assert cfg.data.root.endswith("data/synthetic_emotion_tiny") and cfg.num_workers == 2
    assert prepare.data.bpe.reuse.endswith("data/prepared/synthetic_tiny/bpe.json")
    assert prepare.data.recipe.root == prepare.data.root
