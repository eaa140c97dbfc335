"""infer.py end to end through Hydra: one utterance and a whole meta.lst (batched, resumable)."""

import importlib.util
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

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


def run(monkeypatch, *overrides):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # errors propagate instead of sys.exit(1)
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
    assert "u5\tbad_request\trequests[" in rejects and "corrupt.wav: unreadable audio" in rejects
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


@pytest.mark.parametrize("mode", ["resynthesis", "oracle_tokens"])
def test_ceiling_modes_render_the_ground_truth_of_a_meta_list(setup, monkeypatch, capsys, mode):
    refs = setup["refs"]
    meta = setup["root"] / "set" / "meta_gt.lst"
    meta.write_text(f"g1|alpha|{refs[0]}|beta|{refs[2]}\ng2|gamma|{refs[1]}|delta|{refs[1]}\n")
    out = setup["root"] / f"out_{mode}"
    run(monkeypatch, *setup["common"], f"meta={meta}", f"out_dir={out}", f"mode={mode}")
    assert "generated 2 utterances" in capsys.readouterr().out
    g1 = sf.read(out / "g1.wav")[0]
    assert abs(len(g1) - len(sf.read(refs[2])[0])) < 1280  # the length of gt_wav, within two tokens
