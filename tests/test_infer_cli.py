"""infer.py end to end through Hydra: one utterance and a whole meta.lst (batched, resumable)."""

import errno
import importlib.util
import os
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speech.inference import RequestError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "infer.py"
_spec = importlib.util.spec_from_file_location(
    "tiny_pipeline", ROOT / "tests" / "inference" / "tiny_pipeline.py"
)
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

pytestmark = pytest.mark.usefixtures("one_thread")
GREEDY = ["sampling.temperature=0", "sampling.noise_scale=0", "progress=false"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer_cli")
    ckpts = tiny.write_checkpoints(root)
    refs = tiny.write_references(root)
    meta = root / "set" / "meta.lst"
    meta.parent.mkdir()
    meta.write_text(
        f"u1|alpha beta|{refs[0]}|gamma delta\n"
        f"u2|epsilon zeta eta|{refs[1]}|theta iota kappa lambda\n"
        "broken line\n"
        f"u3||{refs[2]}|mu alpha<#0.2#>beta\n"
        f"u4|gamma|{refs[2]}|delta\n"
        "u5|zeta|corrupt.wav|alpha beta\n"
    )
    (meta.parent / "corrupt.wav").write_bytes(b"RIFF not really a wav file")
    common = [f"ar_ckpt={ckpts['ar']}", f"fm_ckpt={ckpts['fm']}", f"paths.log_dir={root / 'logs'}", *GREEDY]
    return {"root": root, "refs": refs, "meta": meta, "common": common}


def run(monkeypatch, *overrides, full_error=True):
    if full_error:
        monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # errors propagate instead of sys.exit
    else:
        monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *overrides])
    runpy.run_path(str(SCRIPT), run_name="__main__")


def test_single_utterance_zero_and_one_shot(setup, monkeypatch, capsys):
    root, ref = setup["root"], setup["refs"][1]
    run(monkeypatch, *setup["common"], "text=alpha beta gamma", f"ref_wav={ref}", f"out={root / 'zs.wav'}")
    run(monkeypatch, *setup["common"], "text=alpha beta gamma", f"ref_wav={ref}", "prompt_text=delta epsilon",
        f"out={root / 'os.flac'}", "audio.format=flac", "audio.sample_rate=8000")  # fmt: skip
    zero, sr = sf.read(root / "zs.wav")
    one, sr8 = sf.read(root / "os.flac")
    assert sr == 16000 and sr8 == 8000 and len(zero) % 640 == 0 and len(one) % 320 == 0 and len(one) > 0
    assert "RTF" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"ends in \.flac but audio.format=wav; set audio.format=flac"):
        run(monkeypatch, *setup["common"], "text=hi", f"ref_wav={ref}", f"out={root / 'x.flac'}")
    with pytest.raises(ValueError, match="give text=... and ref_wav=..."):
        run(monkeypatch, *setup["common"], "text=hi")
    with pytest.raises(ValueError, match="meta=... needs out_dir=..."):
        run(monkeypatch, *setup["common"], f"meta={setup['meta']}")
    with pytest.raises(
        ValueError,
        match=r"mode must be one of \['zero_shot', 'one_shot', 'resynthesis', 'oracle_tokens'\], "
        r"got 'two_shot'",
    ):
        run(monkeypatch, *setup["common"], f"meta={setup['meta']}", f"out_dir={root}", "mode=two_shot")


def test_single_utterance_streamed_at_speed_as_mp3(setup, monkeypatch, capsys):
    root, ref = setup["root"], setup["refs"][0]
    run(monkeypatch, *setup["common"], "text=alpha beta gamma delta", f"ref_wav={ref}", "prompt_text=mu",
        f"out={root / 's.mp3'}", "audio.format=mp3", "audio.bitrate=64000", "stream=true", "chunk_tokens=4",
        "voice.speed=2.0", "voice.pitch=-3")  # fmt: skip
    out = capsys.readouterr().out
    assert "the first after" in out and "RTF" in out
    assert sf.info(root / "s.mp3").format == "MP3" and sf.info(root / "s.mp3").samplerate == 16000
    with pytest.raises(ValueError, match="stream=true streams one utterance"):
        run(monkeypatch, *setup["common"], f"meta={setup['meta']}", f"out_dir={root}", "stream=true")


@pytest.mark.parametrize("mode", ["zero_shot", "one_shot"])
def test_meta_list_batched_and_resumable(setup, monkeypatch, capsys, mode):
    out = setup["root"] / f"out_{mode}"
    args = [*setup["common"], f"meta={setup['meta']}", f"out_dir={out}", f"mode={mode}", "batch_size=2"]
    run(monkeypatch, *args)
    written = sorted(p.name for p in out.glob("*.wav"))
    # u3 has no prompt_text: fine zero-shot, rejected one-shot; the broken line is always rejected.
    expected = (
        ["u1.wav", "u2.wav", "u3.wav", "u4.wav"] if mode == "zero_shot" else ["u1.wav", "u2.wav", "u4.wav"]
    )
    assert written == expected
    rejects = (out / "rejects.tsv").read_text()
    assert "bad_meta_line" in rejects and (("u3\tbad_request" in rejects) == (mode == "one_shot"))
    assert "u5\tbad_request\treference: " in rejects and "corrupt.wav: unreadable audio" in rejects
    first = capsys.readouterr().out
    assert f"generated {len(expected)} utterances" in first and "RTF" in first
    u1 = sf.read(out / "u1.wav")[0]
    assert len(u1) > 0 and len(u1) % 640 == 0
    # The same batch alone gives the same audio (greedy): batching does not change results.
    run(monkeypatch, *setup["common"], "text=gamma delta", f"ref_wav={setup['refs'][0]}",
        f"out={out / 'alone.wav'}", *(["prompt_text=alpha beta"] if mode == "one_shot" else []))  # fmt: skip
    np.testing.assert_allclose(sf.read(out / "alone.wav")[0], u1, atol=2 / 32768)
    (out / "alone.wav").unlink()
    # Rerun: everything exists, nothing is generated; a deleted output is made again.
    (out / "u2.wav").unlink()
    mtime = (out / "u1.wav").stat().st_mtime_ns
    run(monkeypatch, *args)
    second = capsys.readouterr().out
    assert "generated 1 utterances" in second and f"skipped {len(expected) - 1} existing" in second
    assert (out / "u2.wav").exists() and (out / "u1.wav").stat().st_mtime_ns == mtime
    # Issue 17, defect 7: a rerun that generates nothing printed "RTF nan".
    run(monkeypatch, *args)
    third = capsys.readouterr().out
    assert f"generated 0 utterances; skipped {len(expected)} existing" in third and "RTF" not in third


@pytest.mark.parametrize("mode", ["resynthesis", "oracle_tokens"])
def test_ceiling_modes_render_the_ground_truth_of_a_meta_list(setup, monkeypatch, capsys, mode):
    refs = setup["refs"]
    meta = setup["root"] / "set" / "meta_gt.lst"
    meta.write_text(f"g1|alpha|{refs[0]}|beta|{refs[2]}\ng2|gamma|{refs[1]}|delta|{refs[1]}\n")
    out = setup["root"] / f"out_{mode}"
    without_ar = [o for o in setup["common"] if not o.startswith("ar_ckpt=")]  # the ceilings read none
    run(monkeypatch, *without_ar, f"meta={meta}", f"out_dir={out}", f"mode={mode}")
    assert "generated 2 utterances" in capsys.readouterr().out
    g1 = sf.read(out / "g1.wav")[0]
    assert abs(len(g1) - len(sf.read(refs[2])[0])) < 1280  # the length of gt_wav, within two tokens


# Issue 17, defect 3: a user error printed a traceback; now one line on stderr and exit status 2, checked
# before any checkpoint is loaded; debug=true (or HYDRA_FULL_ERROR=1) still shows the traceback.
def test_a_user_error_is_one_line_on_stderr(setup, monkeypatch, capsys, tmp_path):
    bad = ["ar_ckpt=missing.ckpt", "fm_ckpt=missing.ckpt", f"paths.log_dir={tmp_path}", "text=alpha",
           f"ref_wav={setup['refs'][0]}", f"out={tmp_path / 'x.wav'}", "voice.volume=20"]  # fmt: skip
    with pytest.raises(SystemExit) as end:
        run(monkeypatch, *bad, full_error=False)
    assert end.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: voice.volume: must be a number in (0, 10], got 20\n"  # not requests[0].voice...
    with pytest.raises(SystemExit) as end:
        run(monkeypatch, *setup["common"], "text=...", f"ref_wav={setup['refs'][0]}", full_error=False)
    assert end.value.code == 2 and capsys.readouterr().err.startswith(
        "error: text: '...' has nothing to speak"
    )
    with pytest.raises(SystemExit) as end:
        run(monkeypatch, *bad, "debug=true", full_error=False)
    err = capsys.readouterr().err
    assert end.value.code == 1 and "Traceback" in err and "RequestError: voice.volume: must be" in err
    with pytest.raises(RequestError, match=r"^voice\.volume: must be a number"):
        run(monkeypatch, *bad)
    capsys.readouterr()
    with pytest.raises(SystemExit) as end:
        run(monkeypatch, *setup["common"], "meta=missing.lst", f"out_dir={tmp_path}", full_error=False)
    assert end.value.code == 2 and capsys.readouterr().err == "error: meta list not found: missing.lst\n"
    no_ar = "needs ar_ckpt=<the AR checkpoint>; only mode=resynthesis and mode=oracle_tokens (with a meta"
    one = ["text=alpha", f"ref_wav={setup['refs'][0]}"]
    for what in (one, [f"meta={setup['meta']}", f"out_dir={tmp_path}"]):
        with pytest.raises(SystemExit) as end:
            run(monkeypatch, "fm_ckpt=missing.ckpt", f"paths.log_dir={tmp_path}", *what, full_error=False)
        assert end.value.code == 2 and no_ar in capsys.readouterr().err


# Issue 17, defects 2 and 7 in a meta.lst: lines that cannot be synthesized are rejected one by one with the
# field and the measured value (no batch index), the rest is generated; a prompt cut to fit is logged.
def test_meta_list_rejects_unusable_lines_and_cuts_long_prompts(setup, monkeypatch, capsys, tmp_path):
    t = np.arange(20 * 16000) / 16000
    long_ref = 0.3 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 4 * t) > 0)
    sf.write(tmp_path / "long.wav", long_ref.astype(np.float32), 16000)
    sf.write(tmp_path / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    sf.write(tmp_path / "short.wav", long_ref[:4000].astype(np.float32), 16000)
    transcript = " ".join(["alpha beta gamma delta"] * 25)
    (tmp_path / "meta.lst").write_text(
        f"ok|alpha beta|{setup['refs'][1]}|gamma delta\n"
        f"long_prompt|{transcript}|long.wav|epsilon zeta\n"
        "silent|alpha|silent.wav|beta\n"
        "short|alpha|short.wav|beta\n"
        f"huge_number|alpha|{setup['refs'][0]}|{'7' * 60}\n"
        "nothing|alpha|short.wav|?!\n"
    )
    out = tmp_path / "out"
    run(monkeypatch, *setup["common"], f"meta={tmp_path / 'meta.lst'}", f"out_dir={out}", "mode=one_shot")
    assert sorted(p.name for p in out.glob("*.wav")) == ["long_prompt.wav", "ok.wav"]
    rejects = dict(line.split("\t", 1) for line in (out / "rejects.tsv").read_text().splitlines())
    assert rejects["silent"].startswith("bad_request\treference: is silent: digital silence")
    assert rejects["short"] == "bad_request\treference: is 0.25 s long; a reference needs at least 0.5 s"
    assert rejects["huge_number"].startswith("bad_request\ttext: the segment 'seven seven")
    assert "more than the AR model's max_len of 512" in rejects["huge_number"]
    assert rejects["nothing"].startswith("bad_request\ttext: '?!' has nothing to speak")
    printed = capsys.readouterr().out  # Hydra's log goes there too
    assert "generated 2 utterances" in printed
    assert "long_prompt: prompt_text: the one-shot prompt is cut to fit the AR model's max_len" in printed
    assert "of 20.00 s of audio" in printed


# Issue 17, defects 4 and 5: where the audio goes is checked before any checkpoint is loaded (these
# checkpoints do not exist): out=o.ogg wrote WAV bytes under .ogg, and a read-only folder failed after
# synthesis with a traceback naming o.wav.tmp.
def test_where_the_audio_goes_is_checked_before_any_model_is_loaded(setup, monkeypatch, capsys, tmp_path):
    nothing = ["ar_ckpt=missing.ckpt", "fm_ckpt=missing.ckpt", f"paths.log_dir={tmp_path}"]
    single = [*nothing, "text=alpha", f"ref_wav={setup['refs'][0]}"]

    def error(*overrides) -> str:
        with pytest.raises(SystemExit) as end:
            run(monkeypatch, *overrides, full_error=False)
        assert end.value.code == 2
        return capsys.readouterr().err

    assert error(*single, f"out={tmp_path / 'o.ogg'}") == (
        f"error: {tmp_path / 'o.ogg'} ends in .ogg: the suffix must name the audio format, one of .wav, "
        f".flac, .pcm, .mp3; for audio.format=wav write to {tmp_path / 'o.wav'}\n"
    )
    assert "ends in .wav but audio.format=mp3; set audio.format=wav" in error(
        *single, f"out={tmp_path / 'o.wav'}", "audio.format=mp3"
    )
    (tmp_path / "file").write_text("")
    assert error(*single, f"out={tmp_path / 'file' / 'o.wav'}") == (
        f"error: the output folder {tmp_path / 'file'} is a file\n"
    )

    def read_only_filesystem(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("speech.inference.audio_output.tempfile.NamedTemporaryFile", read_only_filesystem)
    message = "cannot write to the output folder {}: Read-only file system; choose another folder"
    assert message.format(tmp_path / "ro") in error(*single, f"out={tmp_path / 'ro' / 'o.wav'}")
    for mode in ("zero_shot", "resynthesis"):
        assert message.format(tmp_path / "ro") in error(
            *nothing, f"meta={setup['meta']}", f"out_dir={tmp_path / 'ro'}", f"mode={mode}"
        )
