"""eval/seedtts_eval.py end to end through Hydra, as a user runs it, and the eval config groups."""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir
from hydra.utils import get_class

from speech.metrics.asr.base import ASRBackend
from speech.metrics.speaker.base import SpeakerEmbedder

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "eval" / "seedtts_eval.py"
CONFIGS = ROOT / "configs"
SR = 16000


class ConstantEmbedder(SpeakerEmbedder):
    """Every waveform has the same embedding, so every SIM is 1."""

    name = "constant"

    def embed(self, wav):
        return np.ones(4, dtype=np.float32)


def _write_test_set(root: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    (root / "set" / "prompts").mkdir(parents=True)
    (root / "gen").mkdir()
    for name in ("set/prompts/p1.wav", "set/prompts/p2.wav", "set/gt1.wav", "gen/u1.wav", "gen/u2.wav"):
        sf.write(root / name, (0.1 * rng.standard_normal(SR)).astype(np.float32), SR)
    meta = root / "set" / "meta.lst"
    meta.write_text(
        "u1|prompt|prompts/p1.wav|Good morning, everyone.|gt1.wav\n"
        "u2|prompt|prompts/p2.wav|See you later!\n"
        "u3|prompt|prompts/p2.wav|This one was never generated.\n"
        "broken line\n"
    )
    transcripts = root / "hyp.tsv"
    transcripts.write_text("u1\tgood morning everyone\nu2\tsee you letter\ngt/u1\tgood morning every one\n")
    return meta, root / "gen", transcripts


def _run(monkeypatch, *overrides: str) -> None:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *overrides])
    runpy.run_path(str(SCRIPT), run_name="__main__")


def test_cli_writes_records_and_summaries(tmp_path, monkeypatch, capsys):
    meta, gen, transcripts = _write_test_set(tmp_path)
    out = tmp_path / "report"
    monkeypatch.chdir(tmp_path)
    _run(
        monkeypatch, f"meta={meta}", f"gen_dir={gen}", "language=en", "asr=transcripts",
        f"asr.path={transcripts}", f"speaker._target_={__name__}.ConstantEmbedder", f"out_dir={out}",
        "progress=false", "bootstrap.n_resamples=200",
    )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    g, gt = summary["generated"], summary["ground_truth"]
    assert (g["n_expected"], g["n_scored"], g["missing"]) == (3, 2, ["u3"])
    assert g["wer"]["estimate"] == pytest.approx((0 + 1 / 3) / 2)
    assert g["sim"]["estimate"] == pytest.approx(1.0)
    assert gt["n_scored"] == 1 and gt["wer"]["estimate"] == pytest.approx(2 / 3)  # "every one": 1 sub + 1 ins
    assert summary["asr"] == "transcripts" and summary["speaker"] == "constant"
    assert len(summary["meta_rejects"]) == 1 and f"{meta}:4" in summary["meta_rejects"][0]
    records = [json.loads(line) for line in (out / "utterances.jsonl").read_text().splitlines()]
    assert [(r["row"], r["utt"]) for r in records] == [
        ("generated", "u1"),
        ("generated", "u2"),
        ("ground_truth", "u1"),
    ]
    assert "| generated | 2 / 3 | 16.67 [" in (out / "summary.md").read_text()
    assert (out / ".hydra" / "config.yaml").is_file()
    assert not (tmp_path / "outputs").exists()  # hydra.run.dir is out_dir
    assert "| ground truth | 1 / 1 | 66.67 [" in capsys.readouterr().out


def test_cli_missing_checkpoint_names_the_path(tmp_path, monkeypatch, capsys):
    meta, gen, _ = _write_test_set(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit):
        _run(
            monkeypatch, f"meta={meta}", f"gen_dir={gen}", "asr=whisper",
            f"asr.model_dir={tmp_path}/no-such-whisper", f"out_dir={tmp_path}/out", "progress=false",
        )  # fmt: skip
    assert f"Whisper model folder not found: {tmp_path}/no-such-whisper" in capsys.readouterr().err


@pytest.mark.parametrize("asr", ["pocketsphinx", "whisper", "paraformer", "transcripts", "ctc_judge"])
@pytest.mark.parametrize("speaker", ["resemblyzer", "wavlm_ecapa"])
def test_eval_config_groups_compose(asr, speaker, tmp_path):
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose(
            "entry/seedtts_eval", overrides=[f"asr={asr}", f"speaker={speaker}", "meta=m.lst", "gen_dir=g"]
        )
    assert issubclass(get_class(cfg.asr._target_), ASRBackend)
    assert issubclass(get_class(cfg.speaker._target_), SpeakerEmbedder)
    assert cfg.out_dir and cfg.language == "en"
