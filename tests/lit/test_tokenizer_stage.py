"""The tokenizer stage: it learns, trains through train.py, resumes, rebuilds from a checkpoint alone, and
its encode and eval entry points fill the token cache and score held-out audio."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lhotse import CutSet
from script_runs import run_script
from tiny_tokenizer import tokenizer_command

from speech.audio.mel import LogMelSpectrogram
from speech.checkpoints import build_model
from speech.data.cache import FeatureCache
from speech.lit.audio_tokenizer import AudioTokenizerModule
from speech.lit.datamodule import SpeechDataModule
from speech.lit.schedules import AdamWSchedule
from speech.models.audio_tokenizer import AudioTokenizer
from speech.modules.quantizers import build_quantizer
from speech.text.byte_ctc import judge_target

ROOT = Path(__file__).resolve().parents[2]
TRAIN, ENCODE, EVAL = (
    ROOT / "train.py",
    ROOT / "scripts" / "encode.py",
    ROOT / "eval" / "tokenizer_eval.py",
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("experiment", "kind"), [("tokenizer_tiny", "fsq"), ("tokenizer_tiny", "vq"), ("tokenizer_base", "fsq")]
)
def test_experiment_configs_build(experiment, kind):
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("entry/train", overrides=[f"experiment={experiment}", f"model.quantizer.kind={kind}"])
    model = instantiate(cfg.model)
    assert isinstance(model, AudioTokenizer) and model.downsample * 25 == 100
    assert model.codebook_size == (4375 if kind == "fsq" else 512)
    module = instantiate(cfg.stage, model=model, mel=instantiate(cfg.data.mel))
    assert isinstance(module, AudioTokenizerModule)


def test_overfits_one_batch(shared_prepared):
    torch.manual_seed(0)
    dm = SpeechDataModule(shared_prepared, max_duration=2.0, num_workers=0, references=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    quantizer = build_quantizer("fsq", 48, fsq={"levels": [5, 5, 5]})
    model = AudioTokenizer(
        quantizer,
        dim=48,
        encoder_layers=1,
        decoder_layers=1,
        ctc_layers=1,
        heads=2,
        conv_channels=32,
        dropout=0.0,
        mel_mean=-5.9,
        mel_std=2.6,
    )
    module = AudioTokenizerModule(
        model, LogMelSpectrogram(), optim=AdamWSchedule(lr=3e-3, warmup_steps=1, total_steps=1000)
    )
    opt = module.configure_optimizers()["optimizer"]
    losses = []
    for _ in range(25):
        loss = module._losses(batch)[0]["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], (losses[0], losses[-1])


@pytest.fixture(scope="module")
def trained(shared_prepared, tmp_path_factory):
    """Two steps of experiment=tokenizer_tiny through train.py, then two more (a resume)."""
    log_dir = tmp_path_factory.mktemp("tokenizer_runs")
    common = tokenizer_command(shared_prepared, log_dir)
    run_script(TRAIN, *common, "trainer.max_steps=2")
    last = log_dir / "tokenizer_tiny" / "checkpoints" / "last.ckpt"
    first = torch.load(last, weights_only=False)
    run_script(TRAIN, *common, "trainer.max_steps=4")  # same command, longer: resumes
    return {"first": first, "last": last, "log_dir": log_dir}


def test_train_py_step_resume_and_rebuild(trained):
    first, last = trained["first"], trained["last"]
    assert first["global_step"] == 2 and first["config"]["model"]["dim"] == 32
    second = torch.load(last, weights_only=False)
    assert second["global_step"] == 4
    assert {int(s["step"]) for s in second["optimizer_states"][0]["state"].values()} == {4}
    csvs = sorted((trained["log_dir"] / "tokenizer_tiny" / "csv").glob("*/metrics.csv"))  # one per launch
    metrics = "".join(p.read_text() for p in csvs)
    for key in ("train/loss", "train/ctc", "val/usage", "val/perplexity", "val/cer", "val/mel_l1"):
        assert key in metrics, key
    model, cfg = build_model(last)
    assert isinstance(model, AudioTokenizer) and not model.training and model.codebook_size == 64
    tokens, lens = model.encode(torch.randn(1, 400, cfg.data.mel.n_mels), torch.tensor([400]))
    assert tokens.shape == (1, 100) and lens.item() == 100


def test_two_codebooks_train_through_train_py_and_log_usage_per_codebook(shared_prepared, tmp_path):
    """``model.quantizer.codebooks=2``: ids of ``64 ** 2``, usage logged per codebook (a percentage of 64
    codes, not of 4,096 pairs), and the checkpoint rebuilds a residual tokenizer whose ids decode."""
    run_script(TRAIN, *tokenizer_command(shared_prepared, tmp_path, "model.quantizer.codebooks=2",
                                         "trainer.max_steps=2"))  # fmt: skip
    model, cfg = build_model(tmp_path / "tokenizer_tiny" / "checkpoints" / "last.ckpt")
    assert model.codebooks == 2 and model.codebook_size == 64**2
    tokens, lens = model.encode(torch.randn(1, 400, cfg.data.mel.n_mels), torch.tensor([400]))
    assert int(tokens.max()) < 64**2 and model.decode(tokens, lens).shape == (1, 400, cfg.data.mel.n_mels)
    (csv,) = (tmp_path / "tokenizer_tiny" / "csv").glob("*/metrics.csv")
    rows = [line.split(",") for line in csv.read_text().splitlines()]
    column = rows[0].index("val/usage")
    usage = [float(row[column]) for row in rows[1:] if row[column]]
    # validation holds a few dozen tokens: over 64 codes they use a third, over 4,096 pairs under 1 %
    assert usage and all(10 < u <= 100 for u in usage), usage


def test_encode_script_fills_cache_and_resumes(trained, shared_prepared, tmp_path, capsys):
    args = [
        f"ckpt={trained['last']}",
        f"data.prepared_dir={shared_prepared}",
        f"out={tmp_path}",
        "kind=tokens",
        "progress=false",
    ]
    run_script(ENCODE, *args)
    cuts = list(CutSet.from_file(shared_prepared / "train_cuts.jsonl.gz"))
    cuts += list(CutSet.from_file(shared_prepared / "val_cuts.jsonl.gz"))
    assert f"{len(cuts)} cuts, {len(cuts)} encoded now, 0 cached before" in capsys.readouterr().out
    cache = FeatureCache.for_checkpoint(tmp_path, "tokens", trained["last"])
    assert cache.missing(c.id for c in cuts) == []
    for cut in cuts[:3]:
        tokens = cache.load(cut.id)
        assert tokens.dtype == np.int32 and len(tokens) == int(cut.num_samples) // 160 // 4
    run_script(ENCODE, *args)
    assert f"{len(cuts)} cuts, 0 encoded now, {len(cuts)} cached before" in capsys.readouterr().out


def test_encode_script_refuses_the_cached_cut_of_another_corpus(
    trained, shared_prepared, tmp_path, monkeypatch
):
    """A second corpus with the same cut ids but other recordings, encoded into the same cache folder: the
    run stops instead of keeping the first corpus's tokens for it."""
    args = [f"ckpt={trained['last']}", f"out={tmp_path / 'cache'}", "kind=tokens", "progress=false"]
    run_script(ENCODE, *args, f"data.prepared_dir={shared_prepared}")
    other = tmp_path / "other"
    other.mkdir()
    for split in ("train", "val"):
        cuts = CutSet.from_file(shared_prepared / f"{split}_cuts.jsonl.gz")
        cuts.map(lambda cut: cut.truncate(duration=cut.duration / 2, preserve_id=True)).to_file(
            other / f"{split}_cuts.jsonl.gz"
        )
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ValueError, match="two corpora share cut ids"):
        run_script(ENCODE, *args, f"data.prepared_dir={other}")


def test_encode_script_refuses_a_tokenizer_for_latents(trained, shared_prepared, tmp_path, capsys):
    args = [
        f"ckpt={trained['last']}",
        f"data.prepared_dir={shared_prepared}",
        f"out={tmp_path}",
        "kind=latents",
    ]
    with pytest.raises(SystemExit):
        run_script(ENCODE, *args)
    assert "holds a AudioTokenizer, not a Flow-VAE" in capsys.readouterr().err
    assert not (tmp_path / "latents").exists()


def test_eval_script_writes_summary(trained, tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(3):
        sf.write(
            tmp_path / f"gt{i}.wav", (0.1 * rng.standard_normal(12000 + 4000 * i)).astype(np.float32), 16000
        )
        lines.append(f"u{i}|prompt|gt0.wav|Hello world {i}.|gt{i}.wav")
    (tmp_path / "meta.lst").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    run_script(
        EVAL,
        f"ckpt={trained['last']}",
        f"meta={tmp_path / 'meta.lst'}",
        f"out_dir={out}",
        "progress=false",
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_utterances"] == 3 and summary["n_tokens"] == 18 + 25 + 31  # samples // 160 // 4
    assert 0 < summary["usage_pct"] <= 100 and summary["perplexity"] >= 1 and summary["mel_l1"] > 0
    assert summary["cer"] >= 0 and (out / "summary.md").is_file()
    rows = [json.loads(r) for r in (out / "utterances.jsonl").read_text().splitlines()]
    assert rows[0]["reference"] == "hello world 0" or rows[0]["reference"].startswith("hello world")
    # repeats: tokens equal to the one before them, over all utterances (a cut's tokens do not depend on
    # its batch, so one at a time gives the script's tokens)
    model, cfg = build_model(trained["last"])
    mel = instantiate(cfg.data.mel)
    repeats = pairs = 0
    for i in range(3):
        audio = torch.from_numpy(sf.read(tmp_path / f"gt{i}.wav", dtype="float32")[0])[None]
        tokens, lens = model.eval().encode(*mel(audio, torch.tensor([audio.shape[1]])))
        row = tokens[0, : int(lens[0])]
        repeats, pairs = repeats + int((row[1:] == row[:-1]).sum()), pairs + len(row) - 1
    assert summary["repeat_pct"] == pytest.approx(100 * repeats / pairs)
    assert "repeat_pct" in (out / "summary.md").read_text()


def test_encode_script_aligns_each_transcript_with_the_ctc_head(trained, shared_prepared, tmp_path, capsys):
    """``kind=alignments``: one frame per byte of each cut's CTC target, non-decreasing, inside its tokens;
    the run says how many cuts had no CTC path (spread evenly instead)."""
    args = [f"ckpt={trained['last']}", f"data.prepared_dir={shared_prepared}", f"out={tmp_path}",
            "kind=alignments", "progress=false"]  # fmt: skip
    run_script(ENCODE, *args)
    cuts = list(CutSet.from_file(shared_prepared / "train_cuts.jsonl.gz"))
    total = len(cuts) + len(CutSet.from_file(shared_prepared / "val_cuts.jsonl.gz"))
    assert f"of the {total} cuts had no CTC path" in capsys.readouterr().out
    cache = FeatureCache.for_checkpoint(tmp_path, "alignments", trained["last"])
    for cut in cuts[:5]:
        frames = cache.load(cut.id)
        sup = cut.supervisions[0]
        assert frames.dtype == np.int32 and len(frames) == len(judge_target(sup.text, sup.language).encode())
        assert np.all(np.diff(frames) >= 0) and 0 <= frames.min()
        assert frames.max() < int(cut.num_samples) // 640
    # the report reads both caches and compares every English val cut's alignment with an even spread
    run_script(ENCODE, *[a for a in args if a != "kind=alignments"], "kind=tokens")
    out = tmp_path / "report"
    report = ROOT / "eval" / "alignment_report.py"
    run_script(report, f"ckpt={trained['last']}", f"data.prepared_dir={shared_prepared}",
               f"paths.cache_dir={tmp_path}", f"out_dir={out}", "plot_cuts=2")  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    val = [
        c
        for c in CutSet.from_file(shared_prepared / "val_cuts.jsonl.gz")
        if c.supervisions[0].language == "en"
    ]
    assert summary["cuts"] == len(val) > 0 and summary["mean_abs_tokens"] >= 0
    assert 0 <= summary["spread_evenly_cuts"] <= len(val) and (out / "alignments.png").stat().st_size > 0
