"""The Seed-TTS-eval runner with fake backends: accounting of every utterance, WER/SIM values, writers."""

import json
import logging

import numpy as np
import pytest
import soundfile as sf

from speech.metrics.asr.base import ASRBackend
from speech.metrics.seedtts import (
    RowResult,
    UtteranceRecord,
    evaluate_seedtts,
    summarize_row,
    summary_markdown,
    words_right_by_chance,
    write_outputs,
)
from speech.metrics.speaker.base import SpeakerEmbedder

SR = 16000


class DictASR(ASRBackend):
    """Answers from a dict keyed by utterance id and records every call."""

    name = "dict"
    languages = frozenset({"en", "zh"})

    def __init__(self, texts):
        self.texts, self.calls = texts, []

    def transcribe(self, wavs, *, language, utts=None):
        self.calls.append((language, list(utts)))
        return [self.texts[u] for u in utts]


class PeakEmbedder(SpeakerEmbedder):
    """Embeds a waveform as ``[peak, 1 - peak]``: SIM is a known function of two amplitudes."""

    name = "peak"

    def embed(self, wav):
        peak = float(np.max(np.abs(wav)))
        return np.array([peak, 1.0 - peak])


def expected_sim(a, b):
    ea, eb = np.array([a, 1 - a]), np.array([b, 1 - b])
    return float(ea @ eb / (np.linalg.norm(ea) * np.linalg.norm(eb)))


def tone(amplitude, seconds=1.0, sr=SR, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    wav = (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return np.stack([wav] * channels, axis=1) if channels > 1 else wav


@pytest.fixture
def test_set(tmp_path):
    """Six utterances (good, one error, missing, unreadable, silent, stereo 22.05 kHz) and a bad line."""
    root, gen = tmp_path / "set", tmp_path / "gen"
    (root / "prompts").mkdir(parents=True)
    (root / "gt").mkdir()
    gen.mkdir()
    for utt in ("u1", "u2", "u3", "u4", "u5", "u6"):
        sf.write(root / "prompts" / f"{utt}.wav", tone(0.5), SR)
    sf.write(gen / "u1.wav", tone(0.5), SR)
    sf.write(gen / "u2.wav", tone(0.25, seconds=2.0), SR)
    (gen / "u4.wav").write_bytes(b"RIFF not really a wav")
    sf.write(gen / "u5.wav", np.zeros(SR, dtype=np.float32), SR)
    sf.write(gen / "u6.wav", tone(0.5, seconds=1.5, sr=22050, channels=2), 22050)
    sf.write(root / "gt" / "u1.wav", tone(0.4), SR)
    sf.write(root / "gt" / "u2.wav", tone(0.5), SR)
    meta = root / "meta.lst"
    meta.write_text(
        "u1|prompt one|prompts/u1.wav|Hello world.|gt/u1.wav\n"
        "u2|prompt two|prompts/u2.wav|The cat sat down.|gt/u2.wav\n"
        "u3|prompt three|prompts/u3.wav|Never generated.\n"
        "bad|only three fields|prompts/u1.wav\n"
        "\n"
        "u4|prompt four|prompts/u4.wav|Broken file.\n"
        "u5|prompt five|prompts/u5.wav|Two words.\n"
        "u6|prompt six|prompts/u6.wav|Stereo and resampled.\n"
    )
    texts = {
        "u1": "hello world", "u2": "the cat sat town", "u5": "", "u6": "Stereo, and resampled!",
        "gt/u1": "hello world", "gt/u2": "the hat sat down",
    }  # fmt: skip
    return meta, gen, DictASR(texts)


def test_every_utterance_is_accounted_for(test_set, caplog):
    meta, gen, asr = test_set
    with caplog.at_level(logging.WARNING):
        result = evaluate_seedtts(meta, gen, asr=asr, embedder=PeakEmbedder(), language="en", progress=False)
    g = result.summary["generated"]
    assert (g["n_expected"], g["n_scored"], g["n_missing"], g["n_unreadable"]) == (6, 4, 1, 1)
    assert (
        g["missing"] == ["u3"]
        and list(g["unreadable"]) == ["u4"]
        and "unreadable audio" in g["unreadable"]["u4"]
    )
    assert g["silent"] == ["u5"] and any(
        "silent" in r.message and "u5.wav" in r.message for r in caplog.records
    )
    (reject,) = result.summary["meta_rejects"]
    assert f"{meta}:4" in reject and "found 3" in reject
    assert [r.utt for r in result.generated.records] == ["u1", "u2", "u5", "u6"]


def test_wer_sim_and_durations(test_set):
    meta, gen, asr = test_set
    result = evaluate_seedtts(
        meta, gen, asr=asr, embedder=PeakEmbedder(), language="en", batch_size=2, progress=False
    )
    recs = {r.utt: r for r in result.generated.records}
    assert [recs[u].wer for u in ("u1", "u2", "u5", "u6")] == [0.0, 0.25, 1.0, 0.0]
    assert recs["u6"].hyp_norm == "stereo and resampled"
    g = result.summary["generated"]
    assert g["wer"]["estimate"] == pytest.approx((0 + 0.25 + 1.0 + 0) / 4)
    assert g["corpus_wer"]["estimate"] == pytest.approx((0 + 1 + 2 + 0) / (2 + 4 + 2 + 3))
    # u2 has one word substituted, u5 (silent) both deleted
    assert g["words_right"]["estimate"] == pytest.approx((2 + 3 + 0 + 3) / (2 + 4 + 2 + 3))
    assert g["words_right_chance"]["estimate"] == 0.0  # no transcript shares a word with another reference
    assert g["n_wer_above_0.5"] == 1
    assert recs["u2"].sim == pytest.approx(expected_sim(0.25, 0.5), abs=1e-3)
    assert recs["u1"].sim == pytest.approx(1.0, abs=1e-3) and recs["u5"].sim == pytest.approx(
        expected_sim(0, 0.5)
    )
    assert recs["u6"].duration_s == pytest.approx(1.5, abs=1e-3) and recs["u2"].prompt_duration_s == 1.0
    assert g["wer"]["low"] <= g["wer"]["estimate"] <= g["wer"]["high"]
    # ground truth: WER of gt_wav against the target text, SIM of gt_wav against the prompt
    gt = result.summary["ground_truth"]
    assert (gt["n_expected"], gt["n_scored"]) == (2, 2)
    assert gt["wer"]["estimate"] == pytest.approx((0 + 0.25) / 2)
    assert gt["sim"]["estimate"] == pytest.approx((expected_sim(0.4, 0.5) + 1.0) / 2, abs=1e-3)
    assert ("en", ["gt/u1", "gt/u2"]) in asr.calls and ("en", ["u1", "u2"]) in asr.calls


def test_outputs_and_determinism(test_set, tmp_path):
    meta, gen, asr = test_set
    result = evaluate_seedtts(meta, gen, asr=asr, embedder=PeakEmbedder(), language="en", progress=False)
    again = evaluate_seedtts(meta, gen, asr=asr, embedder=PeakEmbedder(), language="en", progress=False)
    assert again.summary == result.summary
    paths = write_outputs(result, tmp_path / "out")
    lines = [json.loads(line) for line in paths["records"].read_text().splitlines()]
    assert [(r["row"], r["utt"]) for r in lines][-2:] == [("ground_truth", "u1"), ("ground_truth", "u2")]
    assert len(lines) == 6 and lines[0]["transcript"] == "hello world"
    assert json.loads(paths["summary_json"].read_text()) == result.summary
    md = paths["summary_md"].read_text()
    assert "| generated | 4 / 6 | 31.25 [" in md and "| ground truth | 2 / 2 | 12.50 [" in md
    assert "generated: 1 missing: u3" in md and "generated: 1 unreadable: u4" in md and "1 silent: u5" in md
    assert f"bad meta line skipped: {meta}:4" in md
    assert paths["meta_rejects"].read_text().startswith(f"{meta}:4\tbad_meta_line\t")


def test_unreadable_prompt_and_empty_reference(tmp_path):
    (tmp_path / "gen").mkdir()
    sf.write(tmp_path / "p.wav", tone(0.5), SR)
    sf.write(tmp_path / "gen" / "a.wav", tone(0.5), SR)
    sf.write(tmp_path / "gen" / "b.wav", tone(0.5), SR)
    (tmp_path / "broken.wav").write_bytes(b"nope")
    meta = tmp_path / "meta.lst"
    meta.write_text("a|x|broken.wav|你好。\nb|x|p.wav|……\n")
    asr = DictASR({"a": "你好", "b": "多余"})
    result = evaluate_seedtts(
        meta, tmp_path / "gen", asr=asr, embedder=PeakEmbedder(), language="zh", progress=False
    )
    g = result.summary["generated"]
    assert list(g["prompt_unreadable"]) == ["a"] and g["n_sim"] == 1 and g["n_wer"] == 1
    assert g["empty_reference"] == ["b"] and g["wer"]["estimate"] == 0.0
    assert result.summary["ground_truth"] is None
    md = summary_markdown(result.summary)
    assert "1 prompt unreadable: a" in md and "1 empty reference: b" in md


def test_nothing_scored_gives_nulls(tmp_path):
    (tmp_path / "gen").mkdir()
    (tmp_path / "meta.lst").write_text("a|x|p.wav|hello\n")
    result = evaluate_seedtts(
        tmp_path / "meta.lst",
        tmp_path / "gen",
        asr=DictASR({}),
        embedder=PeakEmbedder(),
        language="en",
        progress=False,
    )
    g = result.summary["generated"]
    assert g["n_missing"] == 1 and g["wer"]["estimate"] is None and g["sim"]["estimate"] is None
    assert "| generated | 0 / 1 | n/a | n/a | n/a | n/a | n/a |" in summary_markdown(result.summary)
    json.dumps(result.summary, allow_nan=False)  # strict JSON: no NaN


def test_bad_inputs_raise_clear_errors(tmp_path):
    (tmp_path / "meta.lst").write_text("a|x|p.wav|hello\n")
    asr = DictASR({})
    with pytest.raises(ValueError, match="'dict' does not transcribe 'ja'"):
        evaluate_seedtts(tmp_path / "meta.lst", tmp_path, asr=asr, embedder=PeakEmbedder(), language="ja")
    with pytest.raises(FileNotFoundError, match="generated wavs not found: .*nope"):
        evaluate_seedtts(
            tmp_path / "meta.lst", tmp_path / "nope", asr=asr, embedder=PeakEmbedder(), language="en"
        )
    with pytest.raises(FileNotFoundError, match="meta list not found"):
        evaluate_seedtts(tmp_path / "none.lst", tmp_path, asr=asr, embedder=PeakEmbedder(), language="en")


def _record(ref: str, hyp: str) -> UtteranceRecord:
    return UtteranceRecord(
        utt=ref, row="generated", wav="", prompt_wav="", target_text=ref, transcript=hyp, ref_norm=ref,
        hyp_norm=hyp, wer=0.0, substitutions=0, deletions=0, insertions=0, ref_words=len(ref.split()),
        sim=None, duration_s=1.0, prompt_duration_s=None, silent=False,
    )  # fmt: skip


def test_the_chance_level_counts_words_shared_with_other_sentences():
    # perfect transcripts: all their words are right, and against another sentence only "the" is
    records = [_record(f"w{i} the x{i}", f"w{i} the x{i}") for i in range(9)]
    right, words = words_right_by_chance(records)
    assert right == [1] * 9 and words == [3] * 9
    summary = summarize_row(RowResult("generated", [r.utt for r in records], records), n_resamples=50)
    assert summary["words_right"]["estimate"] == 1.0
    assert summary["words_right_chance"]["estimate"] == pytest.approx(1 / 3)
    assert summary["words_right_above_chance"]["estimate"] == pytest.approx(2 / 3)
    # a transcript right about one sentence of three: 1 of its 2 other references has its words
    mixed = [_record("a b", "c d"), _record("c d", "c d"), _record("e f", "g h")]
    assert words_right_by_chance(mixed) == ([1.0, 0.0, 0.0], [2.0, 2.0, 2.0])
    # babble that says "the" a lot reaches the same level without saying any sentence
    babble = [_record(f"w{i} the x{i}", "the the the") for i in range(9)]
    assert words_right_by_chance(babble)[0] == [1] * 9


@pytest.mark.parametrize("n", [2, 3, 31, 40])
def test_the_chance_level_never_scores_a_transcript_against_its_own_reference(n):
    records = [_record(f"u{i} v{i}", f"u{i} v{i}") for i in range(n)]
    assert words_right_by_chance(records) == ([0.0] * n, [2.0] * n)


def test_one_utterance_has_no_chance_level():
    assert words_right_by_chance([_record("a b", "a b")]) == ([], [])
    summary = summarize_row(RowResult("generated", ["a b"], [_record("a b", "a b")]), n_resamples=10)
    assert summary["words_right_chance"]["estimate"] is None
    assert summary["words_right_above_chance"]["estimate"] is None
