"""Bad data is fixed or skipped with a reason, never a crash (speech.data.manifest)."""

import numpy as np
import pytest
import soundfile as sf

from speech.data.manifest import (
    CutRules,
    build_cuts,
    describe,
    drop_single_utterance_speakers,
    split_validation,
)
from speech.data.records import Utterance
from speech.data.rejects import RejectLog


def tone(seconds, sr=16000, channels=1, amp=0.3):
    t = np.arange(int(seconds * sr)) / sr
    x = (amp * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return np.stack([x] * channels, 1) if channels > 1 else x


def utt(tmp_path, name, seconds=1.0, sr=16000, channels=1, text="hello world", speaker="s1", amp=0.3, **kw):
    path = tmp_path / f"{name}.wav"
    sf.write(path, tone(seconds, sr, channels, amp), sr)
    return Utterance(id=name, audio_path=path, text=text, speaker=speaker, language="en", **kw)


def test_good_and_bad_data(tmp_path):
    (tmp_path / "garbage.wav").write_bytes(b"RIFF....not a wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    utts = [
        utt(tmp_path, "ok", text="I have 2 cats"),
        utt(tmp_path, "stereo_22k", sr=22050, channels=2),
        utt(tmp_path, "narrowband", sr=8000),
        utt(tmp_path, "short", seconds=0.2),
        utt(tmp_path, "long", seconds=3.0),
        utt(tmp_path, "notext", text="   "),
        utt(tmp_path, "segment", seconds=2.0, start=0.5, duration=1.0),
        utt(tmp_path, "badspan", seconds=1.0, start=0.5, duration=2.0),
        Utterance("garbage", tmp_path / "garbage.wav", "text", "s1", "en"),
        Utterance("empty", tmp_path / "empty.wav", "text", "s1", "en"),
        Utterance("gone", tmp_path / "gone.wav", "text", "s1", "en"),
    ]
    rejects = RejectLog()
    rules = CutRules(sample_rate=16000, min_duration=0.5, max_duration=2.5, min_source_rate=16000)
    cuts = build_cuts(utts, rules, rejects, progress=False)
    assert sorted(cuts.ids) == ["ok", "segment", "stereo_22k"]
    reasons = {item: reason for item, reason, _ in rejects.entries}
    assert reasons == {
        "narrowband": "low_sample_rate",
        "short": "too_short",
        "long": "too_long",
        "notext": "empty_transcript",
        "badspan": "bad_span",
        "garbage": "unreadable",
        "empty": "empty_audio",
        "gone": "missing_audio",
    }
    assert all(detail for _, _, detail in rejects.entries)
    stereo = cuts["stereo_22k"]
    audio = stereo.load_audio()
    assert stereo.sampling_rate == 16000 and audio.shape[0] == 1 and abs(audio.shape[1] - 16000) <= 2
    assert cuts["ok"].supervisions[0].text == "I have two cats"  # front-end normalization applied
    assert cuts["segment"].duration == pytest.approx(1.0)
    assert cuts["segment"].load_audio().shape[1] == 16000
    log = rejects.write(tmp_path / "rejects.tsv").read_text().splitlines()
    assert len(log) == 8 and all(len(line.split("\t")) == 3 for line in log)


def test_check_audio_catches_silence(tmp_path):
    utts = [utt(tmp_path, "quiet", amp=0.0), utt(tmp_path, "loud")]
    rejects = RejectLog()
    cuts = build_cuts(utts, CutRules(check_audio=True), rejects, progress=False)
    assert list(cuts.ids) == ["loud"] and rejects.counts() == {"silent": 1}


def test_single_utterance_speakers_and_validation_split(tmp_path):
    utts = [utt(tmp_path, f"a{i}", speaker="a") for i in range(5)]
    utts += [utt(tmp_path, f"b{i}", speaker="b") for i in range(2)]
    utts += [utt(tmp_path, "c0", speaker="c")]
    rejects = RejectLog()
    cuts = drop_single_utterance_speakers(build_cuts(utts, CutRules(), rejects, progress=False), rejects)
    assert rejects.counts() == {"single_utterance_speaker": 1} and "c0" not in cuts.ids
    train, val = split_validation(cuts, per_speaker=2, max_total=10, seed=0)
    # speaker b has only two utterances: both stay in training so it keeps a reference
    assert sorted(c.supervisions[0].speaker for c in val) == ["a", "a"]
    assert len(train) == 5 and not set(train.ids) & set(val.ids)
    again, _ = split_validation(cuts, per_speaker=2, max_total=10, seed=0)
    assert list(again.ids) == list(train.ids)
    stats = describe(train)
    assert (
        stats["utterances"] == 5 and stats["speakers"] == 2 and stats["per_language"]["en"]["utterances"] == 5
    )


def test_duration_batches_pack_sorted_cuts_under_the_cap():
    from types import SimpleNamespace

    from speech.data.collate import duration_batches

    cuts = [SimpleNamespace(id=i, duration=d) for i, d in enumerate([3.0, 1.0, 9.0, 2.0, 2.5])]
    batches = duration_batches(cuts, max_duration=5.0)
    assert [[c.duration for c in b] for b in batches] == [[1.0, 2.0], [2.5], [3.0], [9.0]]


# Issue 17 (training under faults): a corrupt file in a corpus folder is rejected with its path and the rest
# is prepared; a float file with NaN samples passed preparation (without check_audio) and stopped training
# with a NaN loss.
def test_corrupt_files_are_rejected_with_their_path_and_the_rest_kept(tmp_path):
    good = utt(tmp_path, "good")
    whole = good.audio_path.read_bytes()
    corrupt = {
        "zero_bytes": b"",
        "text": b"not audio at all\n",
        "cut_header": whole[:30],
    }
    for name, content in corrupt.items():
        (tmp_path / f"{name}.wav").write_bytes(content)
    nan = tone(1.0)
    nan[100:200] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(tmp_path / "float.wav", tone(1.0), 16000, subtype="FLOAT")  # finite floats are fine
    names = [*corrupt, "nan", "float"]
    utts = [good, *(Utterance(n, tmp_path / f"{n}.wav", "hello world", "s1", "en") for n in names)]
    rejects = RejectLog()
    cuts = build_cuts(utts, CutRules(), rejects, progress=False)
    assert sorted(cuts.ids) == ["float", "good"]
    assert {item for item, _, _ in rejects.entries} == {*corrupt, "nan"}
    for item, reason, detail in rejects.entries:
        assert reason == "unreadable" and detail.startswith(f"{tmp_path / item}.wav: "), (item, detail)
    assert dict((i, d) for i, _, d in rejects.entries)["nan"].endswith("NaN or inf samples")
