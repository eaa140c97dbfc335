"""Corpus recipes on tiny fake corpora laid out exactly like the real ones."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speech.data.recipes import load_emilia, load_folder, load_libritts, load_seedtts_meta
from speech.data.records import Utterance
from speech.data.rejects import RejectLog

SR = 16000


def _audio(path: Path, seconds: float = 0.05) -> Path:
    """Writes a short tone; the format follows the extension (wav, flac, mp3)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    sf.write(str(path), (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR)
    return path


def _text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _entries(rejects: RejectLog) -> set[tuple[str, str]]:
    return {(item, reason) for item, reason, _ in rejects.entries}


# --------------------------------------------------------------------------------------------- LibriTTS


def _libritts_utt(chapter_dir: Path, stem: str, normalized: str | None, original: str | None) -> Path:
    wav = _audio(chapter_dir / f"{stem}.wav")
    if normalized is not None:
        _text(chapter_dir / f"{stem}.normalized.txt", normalized)
    if original is not None:
        _text(chapter_dir / f"{stem}.original.txt", original)
    return wav


@pytest.fixture
def libritts_root(tmp_path: Path) -> Path:
    """``LibriTTS/<subset>/<speaker>/<chapter>/`` with the real corpus's file kinds and its gaps."""
    root = tmp_path / "LibriTTS"
    ch = root / "train-clean-100" / "19" / "198"
    _libritts_utt(ch, "19_198_000000_000000", "Hello world, Mister Smith.", "Hello world, Mr. Smith.")
    _libritts_utt(ch, "19_198_000000_000001", "  Two\n  lines   here.\n", "Two lines here!")
    # No per-utterance normalized text, as for a few wavs of the real corpus: the .trans.tsv has it.
    _libritts_utt(ch, "19_198_000001_000000", None, None)
    _libritts_utt(ch, "19_198_000002_000000", None, None)  # in no transcript at all
    _libritts_utt(ch, "19_198_000003_000000", "   \n", "It was 1st.")  # empty normalized text
    _audio(ch / "._19_198_000000_000000.wav")  # macOS resource fork, not audio
    _text(
        ch / "19_198.trans.tsv",
        "19_198_000000_000000\tHello world, Mr. Smith.\tHello world, Mister Smith.\n"
        "19_198_000001_000000\tFrom the TSV, No. 1!\tFrom the TSV, number one!\n"
        "19_198_000009_000000\tonly two fields\n",
    )
    _text(ch / "19_198.book.tsv", "19_198_000000_000000\tHello\tHello\t1\t2\t30.5\n")
    _libritts_utt(root / "train-clean-360" / "1001" / "2002", "1001_2002_000000_000000", "Second.", "2nd.")
    _libritts_utt(
        root / "dev-clean" / "84" / "121123", "84_121123_000007_000001", "Maximilian.", "Maximilian."
    )
    _text(root / "speakers.tsv", "READER\tGENDER\tSUBSET\tNAME\n19\tF\ttrain-clean-100\tKara\n")
    (root / "manifests").mkdir()  # not a subset folder
    return root


def test_libritts_reads_every_subset_with_normalized_text(libritts_root: Path) -> None:
    rejects = RejectLog()
    utts = load_libritts(libritts_root, rejects=rejects)

    ch = libritts_root / "train-clean-100" / "19" / "198"
    assert utts == [
        Utterance(
            "1001_2002_000000_000000",
            libritts_root / "train-clean-360" / "1001" / "2002" / "1001_2002_000000_000000.wav",
            "Second.",
            "1001",
            "en",
        ),
        Utterance(
            "19_198_000000_000000", ch / "19_198_000000_000000.wav", "Hello world, Mister Smith.", "19", "en"
        ),
        Utterance("19_198_000000_000001", ch / "19_198_000000_000001.wav", "Two lines here.", "19", "en"),
        Utterance(
            "19_198_000001_000000", ch / "19_198_000001_000000.wav", "From the TSV, number one!", "19", "en"
        ),
        Utterance(
            "84_121123_000007_000001",
            libritts_root / "dev-clean" / "84" / "121123" / "84_121123_000007_000001.wav",
            "Maximilian.",
            "84",
            "en",
        ),
    ]
    assert all(u.start == 0.0 and u.duration is None for u in utts)
    assert _entries(rejects) == {
        (str(ch / "19_198_000002_000000.wav"), "missing_transcript"),
        (str(ch / "19_198_000003_000000.wav"), "empty_transcript"),
        (f"{ch / '19_198.trans.tsv'}:3", "bad_transcript_line"),
    }
    details = {reason: detail for _, reason, detail in rejects.entries}
    assert "19_198_000002_000000.normalized.txt" in details["missing_transcript"]
    assert "found 2" in details["bad_transcript_line"]


def test_libritts_original_text_chosen_subsets_and_prefix(libritts_root: Path) -> None:
    rejects = RejectLog()
    utts = load_libritts(
        libritts_root,
        ["train-clean-100", "dev-clean"],
        text="original",
        speaker_prefix="ltts_",
        rejects=rejects,
    )

    assert [(u.id, u.text, u.speaker) for u in utts] == [
        ("ltts_19_198_000000_000000", "Hello world, Mr. Smith.", "ltts_19"),
        ("ltts_19_198_000000_000001", "Two lines here!", "ltts_19"),
        ("ltts_19_198_000001_000000", "From the TSV, No. 1!", "ltts_19"),
        ("ltts_19_198_000003_000000", "It was 1st.", "ltts_19"),
        ("ltts_84_121123_000007_000001", "Maximilian.", "ltts_84"),
    ]
    # The .trans.tsv is read (and its bad line reported) on the first wav that needs it.
    assert [reason for _, reason, _ in rejects.entries] == ["bad_transcript_line", "missing_transcript"]


def test_libritts_takes_a_single_subset_name(libritts_root: Path) -> None:
    utts = load_libritts(libritts_root, "dev-clean")
    assert [u.id for u in utts] == ["84_121123_000007_000001"]


def test_libritts_errors_name_what_exists(libritts_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="LibriTTS root not found: .*nowhere"):
        load_libritts(tmp_path / "nowhere")
    there = r"subsets there: \['dev-clean', 'train-clean-100', 'train-clean-360'\]"
    with pytest.raises(FileNotFoundError, match=r"\['train-clean-500'\] not found in .*LibriTTS; " + there):
        load_libritts(libritts_root, ["train-clean-100", "train-clean-500"])
    with pytest.raises(ValueError, match=r"text must be one of \('normalized', 'original'\), got 'raw'"):
        load_libritts(libritts_root, text="raw")
    # Pointing at the folder above the corpus: the message shows what is there instead.
    with pytest.raises(FileNotFoundError, match=r"no LibriTTS subset folder .*its folders: \['LibriTTS'\]"):
        load_libritts(tmp_path)


# ---------------------------------------------------------------------------------------------- Emilia


def _emilia_record(lang: str, spk: int, seg: int, text: str, dnsmos: float | None = 3.3, **extra) -> dict:
    utt = f"{lang}_B00000_S{spk:05d}_W{seg:06d}"
    record = {
        "id": utt,
        "wav": f"{lang}_B00000/{lang}_B00000_S{spk:05d}/mp3/{utt}.mp3",
        "text": text,
        "duration": 3.25,
        "speaker": f"{lang}_B00000_S{spk:05d}",
        "language": lang.lower(),
    }
    if dnsmos is not None:
        record["dnsmos"] = dnsmos
    record.update(extra)
    return record


@pytest.fixture
def emilia_root(tmp_path: Path) -> Path:
    """The original release: ``<LANG>/<LANG>_B00000.jsonl`` + ``<LANG>/<LANG>_B00000/.../mp3/*.mp3``."""
    root = tmp_path / "Emilia"
    good = _emilia_record("EN", 0, 0, " You can help my mother.", dnsmos=3.29)
    low = _emilia_record("EN", 0, 1, " Honda's gone,  20 squads done.", dnsmos=2.8)
    no_speaker = _emilia_record("EN", 1, 0, "No speaker here.")
    del no_speaker["speaker"]
    no_audio = _emilia_record("EN", 1, 1, "My mp3 was never written.")
    empty = _emilia_record("EN", 1, 2, "   ")
    bad_speaker = _emilia_record("EN", 1, 3, "Speaker is a number.", speaker=123)
    no_dnsmos = _emilia_record("EN", 2, 0, "No DNSMOS score.", dnsmos=None)
    records = [good, low, no_speaker, no_audio, empty, bad_speaker, no_dnsmos]
    for record in records:
        if record is not no_audio:
            _audio(root / "EN" / record["wav"], seconds=0.1)
    lines = [json.dumps(r, ensure_ascii=False) for r in (good, low)]
    lines += ["{not json", ""]  # a broken line and a blank one (skipped silently)
    lines += [json.dumps(r) for r in (no_speaker, no_audio, empty)]
    lines += ["[1, 2]", json.dumps(bad_speaker), json.dumps(no_dnsmos)]
    _text(root / "EN" / "EN_B00000.jsonl", "\n".join(lines) + "\n")

    zh = _emilia_record("ZH", 0, 0, "你好，世界。", dnsmos=3.5)
    _audio(root / "ZH" / zh["wav"], seconds=0.1)
    with gzip.open(root / "ZH" / "ZH_B00000.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps(zh, ensure_ascii=False) + "\n")
    (root / "openemilia_all.tar.gz").write_bytes(b"")  # the archive the JSONL files came in
    (root / "notes").mkdir()  # a folder without metadata: ignored when languages=None
    return root


def test_emilia_reads_jsonl_release(emilia_root: Path) -> None:
    rejects = RejectLog()
    utts = load_emilia(emilia_root, rejects=rejects)

    en, zh = emilia_root / "EN", emilia_root / "ZH"
    mp3 = "EN_B00000/EN_B00000_S{:05d}/mp3/EN_B00000_S{:05d}_W{:06d}.mp3"
    assert utts == [
        Utterance(
            "EN_B00000_S00000_W000000",
            en / mp3.format(0, 0, 0),
            "You can help my mother.",
            "EN_B00000_S00000",
            "en",
        ),
        Utterance(
            "EN_B00000_S00000_W000001",
            en / mp3.format(0, 0, 1),
            "Honda's gone, 20 squads done.",
            "EN_B00000_S00000",
            "en",
        ),
        Utterance(
            "EN_B00000_S00002_W000000", en / mp3.format(2, 2, 0), "No DNSMOS score.", "EN_B00000_S00002", "en"
        ),
        Utterance(
            "ZH_B00000_S00000_W000000",
            zh / "ZH_B00000/ZH_B00000_S00000/mp3/ZH_B00000_S00000_W000000.mp3",
            "你好，世界。",
            "ZH_B00000_S00000",
            "zh",
        ),
    ]
    assert all(u.start == 0.0 and u.duration is None for u in utts)
    jsonl = en / "EN_B00000.jsonl"
    assert rejects.entries == [
        (f"{jsonl}:3", "bad_json", rejects.entries[0][2]),
        (f"{jsonl}:5", "missing_field", "missing: speaker"),
        (f"{jsonl}:6", "missing_audio", f"{en / mp3.format(1, 1, 1)} not found"),
        (f"{jsonl}:7", "empty_transcript", "id 'EN_B00000_S00001_W000002'"),
        (f"{jsonl}:8", "bad_json", "expected a JSON object, found list"),
        (f"{jsonl}:9", "bad_field", "malformed: speaker=123"),
    ]


def test_emilia_dnsmos_filter_languages_and_prefix(emilia_root: Path) -> None:
    rejects = RejectLog()
    utts = load_emilia(emilia_root, ["en"], min_dnsmos=3.0, speaker_prefix="emi_", rejects=rejects)

    assert [(u.id, u.speaker) for u in utts] == [("emi_EN_B00000_S00000_W000000", "emi_EN_B00000_S00000")]
    jsonl = emilia_root / "EN" / "EN_B00000.jsonl"
    found = {item: (reason, detail) for item, reason, detail in rejects.entries}
    assert found[f"{jsonl}:2"] == ("low_dnsmos", "dnsmos 2.8 < 3.0")
    assert found[f"{jsonl}:10"] == ("missing_field", "missing: dnsmos")
    assert len(rejects) == 8  # the 6 of the unfiltered run plus these two


def test_emilia_repeated_id_is_rejected(emilia_root: Path) -> None:
    again = _emilia_record("EN", 0, 0, "The same id again.")
    again["wav"] = "EN_B00001/copy.mp3"
    _audio(emilia_root / "EN" / again["wav"])
    _text(emilia_root / "EN" / "EN_B00001.jsonl", json.dumps(again) + "\n")
    rejects = RejectLog()

    utts = load_emilia(emilia_root, "EN", rejects=rejects)

    first = next(u for u in utts if u.id == "EN_B00000_S00000_W000000")
    assert first.text == "You can help my mother."
    assert (str(emilia_root / "EN" / "EN_B00001" / "copy.mp3"), "duplicate_id") in _entries(rejects)


def test_emilia_reads_extracted_webdataset_shards(tmp_path: Path) -> None:
    # amphion/Emilia-Dataset ``Emilia/DE/DE-B000000.tar`` after ``tar -xf``: flat <key>.json + <key>.mp3.
    lang_dir = tmp_path / "Emilia" / "DE"
    record = _emilia_record("DE", 0, 29, " Und es gibt auch einen Stadtplan.")
    _text(lang_dir / f"{record['id']}.json", json.dumps(record))
    _audio(lang_dir / f"{record['id']}.mp3")
    orphan = _emilia_record("DE", 0, 30, "Its mp3 is missing.")
    _text(lang_dir / f"{orphan['id']}.json", json.dumps(orphan))
    _text(lang_dir / "DE_B00000_S00000_W000031.json", "{broken")
    (lang_dir / "DE-B000000.tar").write_bytes(b"")  # the shard, left in place
    rejects = RejectLog()

    utts = load_emilia(tmp_path / "Emilia", rejects=rejects)

    assert utts == [
        Utterance(
            "DE_B00000_S00000_W000029",
            lang_dir / "DE_B00000_S00000_W000029.mp3",
            "Und es gibt auch einen Stadtplan.",
            "DE_B00000_S00000",
            "de",
        )
    ]
    assert _entries(rejects) == {
        (str(lang_dir / "DE_B00000_S00000_W000030.json"), "missing_audio"),
        (str(lang_dir / "DE_B00000_S00000_W000031.json"), "bad_json"),
    }


def test_emilia_errors_name_what_exists(emilia_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Emilia root not found: .*nowhere"):
        load_emilia(tmp_path / "nowhere")
    with pytest.raises(
        FileNotFoundError, match=r"\['FR'\] not found .*folders there: \['EN', 'ZH', 'notes'\]"
    ):
        load_emilia(emilia_root, ["en", "fr"])
    with pytest.raises(FileNotFoundError, match="no Emilia metadata in .*notes: expected <LANG>_B"):
        load_emilia(emilia_root, ["notes"])
    with pytest.raises(
        FileNotFoundError, match=r"no Emilia language folder with metadata .*folders: \['Emilia'\]"
    ):
        load_emilia(tmp_path)

    shards = tmp_path / "webdataset"
    (shards / "KO").mkdir(parents=True)
    (shards / "KO" / "KO-B000000.tar").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"1 webdataset shard\(s\) \(KO-B000000.tar ...\).*tar -xf"):
        load_emilia(shards)


# ---------------------------------------------------------------------------------------------- folder


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    root = tmp_path / "my_voices"
    _audio(root / "spkA" / "a1.wav")
    _text(root / "spkA" / "a1.txt", "Hello\nthere. ")
    _audio(root / "spkA" / "a2.flac")
    _text(root / "spkA" / "a2.txt", "Second take.")
    _audio(root / "spkA" / "a3.wav")  # no transcript
    _audio(root / "spkA" / "._a1.wav")  # macOS resource fork
    _audio(root / "spkB" / "b1.wav")
    _text(root / "spkB" / "b1.txt", "  \n")
    _audio(root / "spkB" / "b2.WAV")
    _text(root / "spkB" / "b2.txt", "Upper-case extension.")
    _audio(root / "spkB" / "b2x.mp3")  # not one of audio_exts
    _text(root / "spkB" / "b2x.txt", "Ignored.")
    _audio(root / "spkB" / "b4.wav")
    (root / "spkB" / "b4.txt").write_bytes("caf\xe9".encode("latin-1"))  # not UTF-8
    _audio(root / "spkB" / "sub" / "b3.wav")
    _text(root / "spkB" / "sub" / "b3.txt", "Nested.")
    _audio(root / "top.wav")
    _text(root / "top.txt", "At the top.")
    _audio(root / ".trash" / "x.wav")
    _text(root / ".trash" / "x.txt", "Hidden.")
    return root


def test_folder_parent_speakers(folder_root: Path) -> None:
    rejects = RejectLog()
    utts = load_folder(folder_root, language="en", rejects=rejects)

    assert utts == [
        Utterance("spkA_a1", folder_root / "spkA" / "a1.wav", "Hello there.", "spkA", "en"),
        Utterance("spkA_a2", folder_root / "spkA" / "a2.flac", "Second take.", "spkA", "en"),
        Utterance("spkB_b2", folder_root / "spkB" / "b2.WAV", "Upper-case extension.", "spkB", "en"),
        Utterance("spkB_sub_b3", folder_root / "spkB" / "sub" / "b3.wav", "Nested.", "sub", "en"),
        Utterance("top", folder_root / "top.wav", "At the top.", "my_voices", "en"),
    ]
    assert _entries(rejects) == {
        (str(folder_root / "spkA" / "a3.wav"), "missing_transcript"),
        (str(folder_root / "spkB" / "b1.wav"), "empty_transcript"),
        (str(folder_root / "spkB" / "b4.wav"), "unreadable_transcript"),
    }


def test_folder_fixed_speaker_extensions_and_duplicate_ids(folder_root: Path) -> None:
    _audio(folder_root / "spkA" / "a1.mp3")  # same id as a1.wav once mp3 is picked up too
    rejects = RejectLog()

    utts = load_folder(
        folder_root, language="de", speaker="narrator", audio_exts=("mp3", ".WAV"), rejects=rejects
    )

    assert [(u.id, u.audio_path.name, u.speaker, u.language) for u in utts] == [
        ("spkA_a1", "a1.mp3", "narrator", "de"),
        ("spkB_b2", "b2.WAV", "narrator", "de"),
        ("spkB_b2x", "b2x.mp3", "narrator", "de"),
        ("spkB_sub_b3", "b3.wav", "narrator", "de"),
        ("top", "top.wav", "narrator", "de"),
    ]
    assert (str(folder_root / "spkA" / "a1.wav"), "duplicate_id") in _entries(rejects)
    assert [u.id for u in load_folder(folder_root, language="en", audio_exts=".flac")] == ["spkA_a2"]


def test_folder_errors(folder_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="audio folder not found: .*nowhere"):
        load_folder(tmp_path / "nowhere", language="en")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    with pytest.raises(FileNotFoundError, match=r"no audio files \(.flac, .wav\) under .*empty"):
        load_folder(tmp_path / "empty", language="en")
    with pytest.raises(ValueError, match="language must be a language code"):
        load_folder(folder_root, language="")
    with pytest.raises(ValueError, match="speaker must be 'parent' or a speaker id"):
        load_folder(folder_root, language="en", speaker="")
    with pytest.raises(ValueError, match="audio_exts must name at least one extension"):
        load_folder(folder_root, language="en", audio_exts=())


# ------------------------------------------------------------------------------------ Seed-TTS-eval meta


@pytest.fixture
def seedtts_meta(tmp_path: Path) -> Path:
    """``meta.lst`` next to ``prompt-wavs/`` and ``wavs/``, as in Seed-TTS-eval's test sets."""
    base = tmp_path / "seedtts_testset" / "en"
    for name in ("p1", "p3", "p6"):
        _audio(base / "prompt-wavs" / f"{name}.wav")
    for name in ("u1", "u2", "u4", "u6"):
        _audio(base / "wavs" / f"{name}.wav")
    lines = [
        "u1|Prompt one.|prompt-wavs/p1.wav|Target one.|wavs/u1.wav",
        "u2|Prompt  one. |prompt-wavs/p1.wav|Target two.|wavs/u2.wav",  # same prompt: listed once
        "u3|Prompt three.|prompt-wavs/p3.wav|Target three.",  # no ground truth
        "u4|Another reading.|./prompt-wavs/p1.wav|Target four.|wavs/u4.wav",  # same wav, other text
        "u5|Prompt five.|prompt-wavs/gone.wav|Target five.|wavs/gone.wav",
        "u6||prompt-wavs/p6.wav|Target six.|wavs/u6.wav",  # prompt without text
        "u7|only|three",
        "u1|Again.|prompt-wavs/p3.wav|Again.",
    ]
    return _text(base / "meta.lst", "\n".join(lines) + "\n")


def test_seedtts_meta_prompts_and_ground_truths(seedtts_meta: Path) -> None:
    rejects = RejectLog()
    utts = load_seedtts_meta(seedtts_meta, language="en", rejects=rejects)

    base = seedtts_meta.parent
    assert utts == [
        Utterance("gt-u1", base / "wavs" / "u1.wav", "Target one.", "spk-u1", "en"),
        Utterance("gt-u2", base / "wavs" / "u2.wav", "Target two.", "spk-u1", "en"),
        Utterance("gt-u4", base / "wavs" / "u4.wav", "Target four.", "spk-u1", "en"),
        Utterance("gt-u6", base / "wavs" / "u6.wav", "Target six.", "spk-u6", "en"),
        Utterance("prompt-u1", base / "prompt-wavs" / "p1.wav", "Prompt one.", "spk-u1", "en"),
        Utterance("prompt-u3", base / "prompt-wavs" / "p3.wav", "Prompt three.", "spk-u3", "en"),
    ]
    assert _entries(rejects) == {
        (str(base / "prompt-wavs" / "p1.wav"), "conflicting_prompt_text"),
        (str(base / "prompt-wavs" / "gone.wav"), "missing_audio"),
        (str(base / "wavs" / "gone.wav"), "missing_audio"),
        (str(base / "prompt-wavs" / "p6.wav"), "empty_transcript"),
        (f"{seedtts_meta}:7", "bad_meta_line"),
        (f"{seedtts_meta}:8", "bad_meta_line"),
    }
    details = {reason: detail for _, reason, detail in rejects.entries}
    assert details["conflicting_prompt_text"] == "u4: 'Another reading.', first read by u1: 'Prompt one.'"


def test_seedtts_meta_errors(seedtts_meta: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="meta list not found: .*missing.lst"):
        load_seedtts_meta(tmp_path / "missing.lst", language="en")
    with pytest.raises(ValueError, match="language must be a language code"):
        load_seedtts_meta(seedtts_meta, language="")


# ------------------------------------------------------------------------------------------- all recipes


def test_recipes_without_a_reject_log_warn_once(
    libritts_root: Path,
    emilia_root: Path,
    folder_root: Path,
    seedtts_meta: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = [
        (lambda: load_libritts(libritts_root), "3 items skipped"),
        (lambda: load_emilia(emilia_root), "6 items skipped"),
        (lambda: load_folder(folder_root, language="en"), "3 items skipped"),
        (lambda: load_seedtts_meta(seedtts_meta, language="en"), "6 items skipped"),
    ]
    for load, summary in calls:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="speech.data.recipes"):
            assert load()
        assert len(caplog.records) == 1
        assert summary in caplog.records[0].getMessage()
