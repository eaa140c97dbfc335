"""The built-in synthetic corpus generator (speech.data.synthetic), on a micro corpus built in tmp_path.

The micro corpus goes through the real code path (real espeak-ng, flite, festival and WORLD) but reads
its sentences from small fake fortune files and a fake Japanese man page written below, so it builds in
seconds and the text filters can be checked against known bad lines.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speech.data.meta_list import read_meta_list
from speech.data.recipes.synthetic import load_synthetic
from speech.data.synthetic import CorpusConfig, EngineNotFoundError, build_corpus, engines, voices
from speech.data.synthetic import build as build_module
from speech.data.synthetic.config import TextConfig, VoiceConfig
from speech.data.synthetic.render import RenderTask, render
from speech.data.synthetic.text_sources import ALLOWED, build_pools
from speech.data.synthetic.warp import Warp, apply_warp, stretch_envelope
from speech.metrics.separability import equal_error_rate, measure_separability, ordered_fraction
from speech.text.normalize import normalize_text

pytestmark = pytest.mark.skipif(
    any(shutil.which(p) is None for p in ("espeak-ng", "flite", "text2wave")),
    reason="needs the Debian synthesizers in scripts/system_packages.txt",
)

EN = """The early bird gets the worm, but the second mouse gets the cheese.
%
A journey of a thousand miles begins with a single step.
\t\t-- Lao Tzu, on walking
%
Visit http://example.org/docs for the full manual today.
%
    /\\_/\\  ( o.o )  > ^ < cat art here.
%
Never put off until tomorrow what you can do the day after tomorrow.
%
She said to call at 5 o'clock and to bring 2 apples.
%
The NASA budget was cut again this year, they reported.
%
Every cloud has a silver lining, except the ones full of rain.
%
Make it work, then make it right, then make it fast.
%
An apple a day keeps the doctor away, if you aim well.
%
Do not count your chickens before they are hatched.
%
Fortune favours the brave, and sometimes the very lucky.
%
Whatever you do, do it with all of your heart and soul.
"""
DE = """Wer anderen eine Grube gräbt, fällt selbst hinein.
%
Besuchen Sie www.beispiel.de für mehr Informationen.
%
Morgenstund hat Gold im Mund, sagt meine Großmutter.
%
Ein Spatz in der Hand ist besser als eine Taube auf dem Dach.
%
Es ist noch kein Meister vom Himmel gefallen.
%
Die Katze lässt das Mausen nicht, auch im Alter nicht.
%
Wer zuletzt lacht, lacht am besten, sagt man.
%
Aller Anfang ist schwer, aber es lohnt sich.
"""
ZH = """使用 Debian 系统时，请先阅读手册。
%
学而时习之，不亦说乎。有朋自远方来，不亦乐乎。
\x1b[33m    -- 孔子\x1b[m
%
知之为知之，不知为不知，是知也。
%
三人行，必有我师焉。
%
温故而知新，可以为师矣。
%
己所不欲，勿施于人。
%
版本 2.0 发布了。
"""
TANG = """\x1b[32m《静夜思》\x1b[m
\x1b[33m作者：李白\x1b[m
床前明月光，疑是地上霜。
举头望明月，低头思故乡。
%
\x1b[32m《春晓》\x1b[m
\x1b[33m作者：孟浩然\x1b[m
春眠不觉晓，处处闻啼鸟。
夜来风雨声，花落知多少。
"""
JA_MAN = """.TH FOO 1
.SH 名前
foo \\- テスト
.SH 説明
このプログラムはファイルの内容を表示します。
設定ファイルが見つからない場合はエラーを返します。
.PP
ls コマンドで一覧を表示します。
.PP
出力は標準出力に書き込まれます。
入力が空の場合は何もしません。
.PP
\\fB\\-a\\fR を指定すると隠しファイルも表示します。
.PP
このオプションは古いバージョンとの互換性のために残されています。
詳しい説明は別のマニュアルを参照してください。
"""


# Pieces of lines the text filters must drop: URLs, acronyms, ascii art, offensive files, attributions,
# poem headers, latin letters inside Chinese.
FILTERED_OUT = ["http", "example", "NASA", "www", "cat art", "offensive", "Lao Tzu", "孔子", "作者", "Debian"]


def write_sources(root: Path) -> TextConfig:
    fortunes = root / "fortunes"
    (fortunes / "de").mkdir(parents=True)
    (fortunes / "off").mkdir()
    (fortunes / "fortunes").write_text(EN, encoding="utf-8")
    (fortunes / "off" / "rude").write_text("This offensive fortune must never be read aloud.\n")
    (fortunes / "de" / "sprueche").write_text(DE, encoding="utf-8")
    (fortunes / "chinese").write_text(ZH, encoding="utf-8")
    (fortunes / "tang300").write_text(TANG, encoding="utf-8")
    man = root / "man" / "man1"
    man.mkdir(parents=True)
    (man / "foo.1.gz").write_bytes(gzip.compress(JA_MAN.encode()))
    return TextConfig(
        fortune_dir=str(fortunes),
        man_ja_dir=str(root / "man"),
        max_sentences_per_language=12,
        heldout_sentences_per_language=3,
        min_seconds=1.0,
        max_seconds=10.0,
    )


def micro_config(text: TextConfig) -> CorpusConfig:
    config = CorpusConfig.from_dict(
        {
            "seed": 3,
            "languages": ["en", "de", "zh", "ja"],
            "voices": {
                "espeak_variants": ["f3", "m7", "klatt4"],
                "flite": ["slt", "rms"],
                "festival": ["kal_diphone", "ked_diphone"],
            },
            "speakers": {
                "num_train": 5,
                "heldout_voices": ["flite-rms", "festival-ked"],
                "num_heldout_espeak": 1,
                "num_unseen_warps": 1,
            },
            "utterances": {
                "per_train_speaker": 2,
                "test_en_per_speaker": 3,
                "test_multi_per_speaker": 2,
                "cross_items_per_speaker": 2,
            },
            "separability_utts_per_speaker": 3,
        }
    )
    return dataclasses.replace(config, text=text)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("synthetic")
    config = micro_config(write_sources(base / "sources"))
    stats = build_corpus(base / "a", config, num_workers=1, separability=False, progress=False)
    return base / "a", config, stats


def manifest(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def corpus_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("build.log", "stats.json")
    }


def test_same_seed_gives_identical_corpus_with_any_worker_count(corpus, tmp_path):
    root, config, _ = corpus
    build_corpus(tmp_path / "b", config, num_workers=2, separability=False, progress=False)
    first, second = corpus_files(root), corpus_files(tmp_path / "b")
    assert sorted(first) == sorted(second)
    assert [name for name in first if first[name] != second[name]] == []
    assert any(name.startswith("wavs/") for name in first)


def test_train_and_test_speakers_are_disjoint(corpus):
    root, _, stats = corpus
    records = manifest(root)
    train = {r["speaker"] for r in records if r["split"] == "train"}
    test = {r["speaker"] for r in records if r["split"] == "test"}
    assert train and test and not train & test
    train_identities = {r["identity"] for r in records if r["split"] == "train"}
    heldout = [r for r in records if r["heldout"] == "voice"]
    assert {r["base_voice"] for r in heldout} >= {"flite-rms", "festival-ked"}
    assert not {r["identity"] for r in heldout} & train_identities
    # an unseen warp is a training voice with warp parameters no training speaker of that voice has
    for r in (r for r in records if r["heldout"] == "warp"):
        same_voice = [t for t in records if t["split"] == "train" and t["base_voice"] == r["base_voice"]]
        assert same_voice and r["warp"] not in [t["warp"] for t in same_voice]
    assert stats["speakers"]["train"]["total"] == 5


def test_meta_lists_pair_different_utterances_of_one_speaker(corpus):
    root, _, stats = corpus
    by_id = {r["id"]: r for r in manifest(root)}
    for name in ("test-synth-en", "test-synth-multi", "test-synth-cross"):
        meta = root / name / "meta.lst"
        lines = meta.read_text(encoding="utf-8").splitlines()
        assert lines and all(len(line.split("|")) == 5 for line in lines)
        entries = read_meta_list(meta)
        assert len(entries) == stats["test_sets"][name]["items"]
        for e in entries:
            assert e.prompt_wav.is_file() and e.gt_wav.is_file()
            assert (root / name) in e.prompt_wav.parents and (root / name) in e.gt_wav.parents
            prompt, target = by_id[e.prompt_wav.stem], by_id[e.gt_wav.stem]
            assert prompt["id"] != target["id"] and prompt["speaker"] == target["speaker"]
            assert prompt["split"] == "test" and e.prompt_text == prompt["text"]
            assert e.target_text == target["text"]
            assert e.gt_wav.read_bytes() == (root / target["path"]).read_bytes()
            if name == "test-synth-en":
                assert prompt["language"] == target["language"] == "en"
            elif name == "test-synth-multi":
                assert prompt["language"] == target["language"] != "en"
            else:
                assert prompt["language"] != target["language"]
        per_language = {p.name: read_meta_list(p) for p in (root / name).glob("meta.*.lst")}
        if name == "test-synth-en":
            assert not per_language  # one language: meta.lst alone
        else:  # one list per target language, together exactly meta.lst
            assert sorted(e.utt for es in per_language.values() for e in es) == sorted(e.utt for e in entries)
            for file, es in per_language.items():
                assert {by_id[e.gt_wav.stem]["language"] for e in es} == {file.split(".")[1]}


def test_transcripts_are_the_normalized_text_that_was_spoken(corpus):
    root, _, _ = corpus
    records = manifest(root)
    assert {r["language"] for r in records} == {"en", "de", "zh", "ja"}
    for r in records:
        assert r["text"] == normalize_text(r["text"], r["language"])
        assert ALLOWED[r["language"]].fullmatch(r["text"])
        part = "train" if r["split"] == "train" else "heldout"
        pool = root / "text" / f"{r['language']}.{part}.txt"
        assert r["text"] in pool.read_text(encoding="utf-8").splitlines()
    spoken = {r["text"] for r in records}
    assert "She said to call at five o'clock and to bring two apples." in spoken or not any(
        "apples" in t for t in spoken
    )


def test_audio_files_match_the_manifest(corpus):
    root, config, _ = corpus
    for r in manifest(root):
        info = sf.info(str(root / r["path"]))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert r["sample_rate"] == info.samplerate
        assert info.frames == r["num_samples"] and r["duration"] == round(info.frames / info.samplerate, 6)
        assert config.audio.min_duration <= r["duration"] <= config.audio.max_duration
        wav, _ = sf.read(str(root / r["path"]), dtype="float32")
        assert np.abs(wav).max() <= config.audio.peak + 1e-3
        assert np.abs(wav[:160]).max() < np.abs(wav).max() / 10  # the trimmed margin is quiet


def test_resume_renders_only_missing_or_broken_wavs(corpus, tmp_path, monkeypatch):
    root, config, _ = corpus
    copy = tmp_path / "corpus"
    shutil.copytree(root, copy)
    records = manifest(copy)
    deleted, truncated, failing = records[0], records[5], records[9]
    originals = {r["id"]: (copy / r["path"]).read_bytes() for r in (deleted, truncated)}
    (copy / deleted["path"]).unlink()
    (copy / truncated["path"]).write_bytes(originals[truncated["id"]][:30])
    (copy / failing["path"]).unlink()
    (copy / "wavs" / deleted["speaker"] / "half-written.part.wav").write_bytes(b"RIFF")
    rendered = []

    def spy(task):
        rendered.append(task.utt_id)
        if task.utt_id == failing["id"]:  # the engine fails on this sentence this time
            return build_module.RenderResult(task.utt_id, "engine_failed", "espeak-ng: exit status 1: boom")
        return render(task)

    monkeypatch.setattr(build_module, "render", spy)
    build_corpus(copy, config, num_workers=1, separability=False, progress=False)
    assert sorted(rendered) == sorted(r["id"] for r in (deleted, truncated, failing))
    for utt_id, data in originals.items():
        assert (copy / next(r["path"] for r in records if r["id"] == utt_id)).read_bytes() == data
    assert failing["id"] not in {r["id"] for r in manifest(copy)}
    assert (copy / "rejects.tsv").read_text().splitlines() == [
        f"{failing['id']}\tengine_failed\tespeak-ng: exit status 1: boom"
    ]
    assert not list(copy.rglob("*.part.wav"))


def test_text_pools_keep_only_sayable_sentences(tmp_path):
    text = write_sources(tmp_path)
    pools = build_pools(["en", "de", "zh", "ja"], text, seed=1)
    sentences = {lang: pool.train + pool.heldout for lang, pool in pools.items()}
    joined = "\n".join(s for group in sentences.values() for s in group)
    for bad in FILTERED_OUT:
        assert bad not in joined
    assert "She said to call at five o'clock and to bring two apples." in sentences["en"]
    assert "床前明月光，疑是地上霜。" in sentences["zh"]
    assert all(not re.search(r"[A-Za-z0-9]", s) for s in sentences["zh"] + sentences["ja"])
    assert all(re.fullmatch(r"[\u3041-\u3096\u30a1-\u30fa\u30fc、。？！]+", s) for s in sentences["ja"])
    assert "このぷろぐらむはふぁいるのないようをひょうじします。" not in sentences["ja"]  # katakana stays
    assert any(s.startswith("このプログラムは") for s in sentences["ja"])
    for pool in pools.values():
        assert pool.heldout and not set(pool.heldout) & set(pool.train)
    assert build_pools(["en"], text, seed=1)["en"] == pools["en"]


def test_missing_engine_and_voice_name_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineNotFoundError, match=r"apt-get install espeak-ng"):
        voices.base_voices(VoiceConfig(espeak_variants=["f3"], flite=[], festival=[]), ["en"])
    with pytest.raises(EngineNotFoundError, match=r"apt-get install flite"):
        engines.synthesize("flite", "slt", "en", "Hello there.")
    monkeypatch.undo()
    monkeypatch.setattr(voices, "FESTIVAL_VOICE_ROOT", tmp_path)
    with pytest.raises(EngineNotFoundError, match=r"festvox-kallpc16k"):
        voices.base_voices(VoiceConfig(espeak_variants=[], flite=[], festival=["kal_diphone"]), ["en"])


def test_a_sentence_the_engine_cannot_say_is_skipped_with_a_reason(tmp_path, corpus):
    _, config, _ = corpus
    task = RenderTask("u1", str(tmp_path / "u1.wav"), "festival", "kal_diphone", "en", "日本語です。",
                      Warp(), 16000, config.audio)  # fmt: skip
    result = render(task)
    assert result.reason == "engine_failed" and "ISO-8859-1" in result.detail
    assert not (tmp_path / "u1.wav").exists()


def test_load_synthetic_reads_the_manifest(corpus, tmp_path):
    root, _, stats = corpus
    train = load_synthetic(root)
    assert len(train) == stats["splits"]["train"]["utterances"]
    assert all(u.audio_path.is_file() and u.text and u.duration for u in train)
    assert {u.language for u in load_synthetic(root, "test")} == {"en", "de", "zh", "ja"}
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        load_synthetic(root, "dev")
    with pytest.raises(FileNotFoundError, match=r"corpus/make_synthetic_corpus.py data=missing_corpus"):
        load_synthetic(tmp_path / "missing_corpus")


def test_warp_moves_pitch_and_formants():
    pw = pytest.importorskip("pyworld")
    wav, sr = engines.synthesize("espeak-ng", "m7", "en", "A warm hello to all of you out there today.")
    wav = wav.astype(np.float32)
    up = apply_warp(wav, sr, Warp(pitch=1.3, formant=1.0, rate=1.2))
    f0 = [pw.dio(x.astype(np.float64), sr)[0] for x in (wav, up)]
    ratio = np.median(f0[1][f0[1] > 0]) / np.median(f0[0][f0[0] > 0])
    assert 1.2 < ratio < 1.4
    assert abs(len(up) / len(wav) - 1 / 1.2) < 0.05
    envelope = np.tile(np.exp(-((np.arange(513) - 100.0) ** 2) / 50.0), (3, 1))
    assert np.argmax(stretch_envelope(envelope, 1.2)[0]) == 120


def test_separability_scores(corpus):
    pytest.importorskip("torch")
    root, _, _ = corpus
    result = measure_separability(root, manifest(root), per_speaker=2)
    assert result["speakers"] == 4 and result["same"] > result["different"]
    assert 0.0 <= result["eer"] <= 0.5 and result["ordered"] > 0.5
    assert equal_error_rate(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 0.0
    assert ordered_fraction(np.array([0.5]), np.array([0.5, 0.1])) == 0.75


@pytest.mark.parametrize("data", ["synthetic_tiny", "synthetic_full"])
def test_corpus_configs_compose_and_meet_their_sizes(data):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose("entry/make_synthetic_corpus", overrides=[f"data={data}"])
    config = CorpusConfig.from_dict(OmegaConf.to_container(cfg.data.synthetic, resolve=True))
    assert cfg.data.name == data and cfg.data.root.endswith(f"data/{data}") and cfg.data.sample_rate == 16000
    assert cfg.data.recipe._target_ == "speech.data.recipes.synthetic.load_synthetic"
    assert config.speakers.num_train >= (300 if data == "synthetic_full" else 100)
    assert set(config.languages) == {"en", "de", "es", "it", "zh", "ja"}
    if data == "synthetic_tiny":  # the YAML spells out the library's defaults, value for value
        assert config == CorpusConfig()


def test_config_rejects_unknown_settings():
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['num_speakers'\] in synthetic.speakers"):
        CorpusConfig.from_dict({"speakers": {"num_speakers": 3}})


def test_the_corpus_counts_training_sentences_per_language(corpus):
    _, _, stats = corpus
    train = [u for u in manifest(corpus[0]) if u["split"] == "train"]
    counted = stats["training_sentences"]
    assert sum(c["utterances"] for c in counted.values()) == len(train)
    for lang, c in counted.items():
        assert c["sentences"] == len({u["text"] for u in train if u["language"] == lang}) <= c["utterances"]


@pytest.mark.skipif(
    shutil.which("espeak-ng") is None or not Path(CorpusConfig().text.fortune_dir).is_dir(),
    reason="needs espeak-ng and the fortunes package (scripts/system_packages.txt)",
)
def test_the_english_ar_corpus_gives_every_training_utterance_its_own_sentence_and_keeps_the_test_set():
    """synthetic_en60 (the AR model's corpus): 6,960 English training utterances, no sentence said twice (the
    1,500-sentence pool it first had made every validation utterance a heard sentence), and the same
    English test plan as synthetic_tiny, so both are scored on one test set."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from speech.data.synthetic.plan import plan_speakers, plan_utterances
    from speech.data.synthetic.stats import training_sentences
    from speech.data.synthetic.voices import base_voices

    def plan(data: str) -> list:
        configs = Path(__file__).resolve().parents[2] / "configs"
        with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
            cfg = compose("entry/make_synthetic_corpus", overrides=[f"data={data}"])
        config = CorpusConfig.from_dict(OmegaConf.to_container(cfg.data.synthetic, resolve=True))
        speakers = plan_speakers(base_voices(config.voices, config.languages, seed=config.seed), config)
        return plan_utterances(speakers, build_pools(config.languages, config.text, config.seed), config)

    en60, tiny = plan("synthetic_en60"), plan("synthetic_tiny")
    said = training_sentences(en60)  # speakers of voices without English say Italian: 4 x 60
    assert said["en"]["utterances"] == 6960 and all(c["sentences"] == c["utterances"] for c in said.values())
    test = [(u.id, u.speaker.id, u.text) for u in tiny if u.split == "test" and u.language == "en"]
    assert len(test) == 224 and test == [
        (u.id, u.speaker.id, u.text) for u in en60 if u.split == "test" and u.language == "en"
    ]
