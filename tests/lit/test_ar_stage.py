"""The AR stage: every experiment config composes, one real training step runs through train.py with a
token cache, a killed run resumes, and the checkpoint alone rebuilds the model and its text BPE."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lhotse import CutSet
from script_runs import run_script

from speech.checkpoints import build_model
from speech.data.cache import FeatureCache
from speech.lit.ar import ARModule, other_text
from speech.lit.resolvers import register_resolvers
from speech.models.ar_transformer import ARTransformer
from speech.text.bpe import TextBPE
from speech.text.byte_ctc import judge_target

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "train.py"
CODES = 64
TINY = [
    "model.dim=32",
    "model.layers=2",
    "model.heads=2",
    "model.speaker_encoder.dim=16",
    "model.speaker_encoder.layers=1",
    "model.speaker_encoder.out_dim=16",
    f"model.audio_vocab_size={CODES}",
    "model.audio_codebooks=1",
]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("experiment", "dim", "millions"),
    [("ar_tiny", 192, (1, 10)), ("ar_small", 512, (30, 60)), ("ar_base", 1024, (250, 400)),
     ("ar_large", 1536, (800, 1200))],
)  # fmt: skip
def test_experiment_configs_build(experiment, dim, millions):
    register_resolvers()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("entry/train", overrides=[f"experiment={experiment}", "model.audio_vocab_size=1000",
                                          "model.audio_codebooks=1",
                                          "model.text_vocab_size=1024"])  # fmt: skip
    assert cfg.data.datamodule.ref_features and cfg.upstream.tokenizer.endswith("checkpoints/last.ckpt")
    assert "feature_cache:tokens" in str(cfg.data.datamodule._content["features"]._content["tokens"]._value())
    with torch.device("meta"):  # no memory for the big ones
        model = instantiate(cfg.model)
    assert isinstance(model, ARTransformer) and model.head.in_features == dim and model.eos_id == 1000
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert millions[0] < n < millions[1], n
    module = instantiate(cfg.stage, model=model, mel=instantiate(cfg.data.mel))
    assert isinstance(module, ARModule) and 0 < module.prompt_prob < 1


def fake_token_cache(prepared: Path, root: Path) -> Path:
    """Random tokens of the right length (samples // 640, 25 Hz) for every prepared cut."""
    cache = FeatureCache(root, meta={"kind": "tokens", "sha256": "fake"})
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cut in CutSet.from_file(prepared / f"{split}_cuts.jsonl.gz"):
            cache.save(cut.id, rng.integers(0, CODES, int(cut.num_samples) // 640).astype(np.int32))
    return cache.root


@pytest.fixture(scope="module")
def trained(shared_prepared, tmp_path_factory):
    """Two steps of experiment=ar_tiny through train.py, then two more (a resume)."""
    log_dir = tmp_path_factory.mktemp("ar_runs")
    cache = fake_token_cache(shared_prepared, log_dir / "token_cache")
    common = [
        "experiment=ar_tiny",
        f"data.prepared_dir={shared_prepared}",
        f"paths.log_dir={log_dir}",
        f"data.datamodule.features.tokens={cache}",
        "data.datamodule.num_workers=0",
        "data.datamodule.max_duration=4",
        "stage.prompt_prob=0.5",
        *TINY,
        "trainer.val_check_interval=2",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        "callbacks.checkpoint.every_n_train_steps=2",
    ]
    run_script(TRAIN, *common, "trainer.max_steps=2")
    last = log_dir / "ar_tiny" / "checkpoints" / "last.ckpt"
    first = torch.load(last, weights_only=False)
    run_script(TRAIN, *common, "trainer.max_steps=4")  # same command, longer: resumes
    return {"first": first, "last": last, "log_dir": log_dir}


def test_train_py_step_and_resume(trained):
    first = trained["first"]
    second = torch.load(trained["last"], weights_only=False)
    assert first["global_step"] == 2 and second["global_step"] == 4
    assert {int(s["step"]) for s in second["optimizer_states"][0]["state"].values()} == {4}
    assert first["config"]["model"]["dim"] == 32 and first["config"]["model"]["audio_vocab_size"] == CODES
    changed = [
        k for k in first["state_dict"] if not torch.equal(first["state_dict"][k], second["state_dict"][k])
    ]
    assert any(k.startswith("model.speaker_encoder.") for k in changed)  # trained jointly
    csvs = sorted((trained["log_dir"] / "ar_tiny" / "csv").glob("*/metrics.csv"))  # one per launch
    metrics = "".join(p.read_text() for p in csvs)
    for key in (
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/loss_prompt",
        "val/acc_prompt",
        "val/text_gain",
    ):
        assert key in metrics, key


def test_the_text_gain_script_reports_both_splits(trained, capsys, monkeypatch):
    """``scripts/ar_text_gain.py`` rebuilds the run's data from the checkpoint and prints the zero-shot loss
    and text gain on training and validation batches; a checkpoint of another stage is refused."""
    script = ROOT / "scripts" / "ar_text_gain.py"
    run_script(script, f"ckpt={trained['last']}", "batches=2", f"paths.log_dir={trained['log_dir']}")
    rows = {line.split("|")[1].strip(): line.split("|")[2:5] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| training") or line.startswith("| validation")}  # fmt: skip
    assert set(rows) == {"training", "validation"}
    for batches, loss, gain in rows.values():
        assert 1 <= int(batches) <= 2 and float(loss) > 0 and abs(float(gain)) < float(loss)
    other = torch.load(trained["last"], weights_only=False)
    other["config"]["stage"]["_target_"] = "speech.lit.flow_matching.FlowMatchingModule"
    torch.save(other, trained["log_dir"] / "other.ckpt")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # the error itself, not Hydra's exit
    with pytest.raises(ValueError, match="not an AR checkpoint"):
        run_script(script, f"ckpt={trained['log_dir'] / 'other.ckpt'}", f"paths.log_dir={trained['log_dir']}")


def test_checkpoint_alone_rebuilds_model_and_text_bpe(trained, shared_prepared):
    ckpt = torch.load(trained["last"], weights_only=False)
    bpe = TextBPE.from_str(ckpt["text_tokenizer"])
    reference = TextBPE.load(shared_prepared / "bpe.json")
    assert bpe.encode("alpha beta gamma") == reference.encode("alpha beta gamma")
    model, cfg = build_model(trained["last"])
    assert isinstance(model, ARTransformer) and not model.training and model.audio_vocab_size == CODES
    assert model.text_emb.num_embeddings == reference.vocab_size
    mel = torch.randn(1, 120, cfg.data.mel.n_mels) - 5
    speaker = model.speaker_vector(mel, torch.tensor([120]))
    text = torch.tensor([bpe.encode("alpha beta")])
    tokens, lens = model.generate(speaker=speaker, text=text, text_lens=torch.tensor([text.shape[1]]),
                                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert 1 <= lens.item() <= 10 * text.shape[1] and int(tokens.max()) < CODES


def test_missing_tokens_in_batch_says_what_to_set():
    module = ARModule(ARTransformer.__new__(ARTransformer), mel=None)
    with pytest.raises(KeyError, match="data.datamodule.features.tokens"):
        module._check({"ids": ["a"], "ref_audio": torch.zeros(1, 10)})


def fake_alignment_cache(prepared: Path, root: Path) -> Path:
    """Each cut's CTC target bytes spread evenly over its tokens (``samples // 640``)."""
    cache = FeatureCache(root, meta={"kind": "alignments", "sha256": "fake"})
    for split in ("train", "val"):
        for cut in CutSet.from_file(prepared / f"{split}_cuts.jsonl.gz"):
            sup = cut.supervisions[0]
            n = len(judge_target(sup.text, sup.language).encode())
            frames = np.floor(np.arange(n) * (int(cut.num_samples) // 640) / max(n, 1))
            cache.save(cut.id, frames.astype(np.int32))
    return cache.root


def stage_config_and_batch(prepared: Path, tmp_path: Path, *overrides: str, experiment: str = "ar_tiny"):
    """``experiment`` at test size with ``overrides``, and one training batch of the prepared corpus with
    random tokens (``fake_token_cache``; and ``fake_alignment_cache`` for ``ar_tiny_aligned``)."""
    from speech.lit.datamodule import SpeechDataModule

    register_resolvers()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("entry/train", overrides=[f"experiment={experiment}", *TINY,
                                                "model.text_vocab_size=300", *overrides])  # fmt: skip
    features = {"tokens": str(fake_token_cache(prepared, tmp_path / "tokens"))}
    if experiment == "ar_tiny_aligned":
        features["alignments"] = str(fake_alignment_cache(prepared, tmp_path / "alignments"))
    dm = SpeechDataModule(prepared, max_duration=6.0, num_buckets=2, num_workers=0, references=True,
                          ref_features=True, features=features)  # fmt: skip
    dm.setup("fit")
    return cfg, next(iter(dm.train_dataloader()))


def test_the_stage_memorizes_a_handful_of_utterances(shared_prepared, tmp_path):
    """A guard against bugs that stop learning (targets, masks, prompts, the optimizer or its schedule): the
    AR stage, as train.py builds it, fits a few utterances' tokens (random, so only memorizing helps) to
    near 100 % teacher-forced accuracy, zero-shot and one-shot, within 150 steps."""
    cfg, batch = stage_config_and_batch(shared_prepared, tmp_path, "model.dropout=0",
                                        "stage.optim.warmup_steps=10", "stage.optim.total_steps=150",
                                        "stage.prompt_prob=0.5")  # fmt: skip
    assert len(batch["ids"]) >= 4
    torch.manual_seed(0)
    module = instantiate(cfg.stage, model=instantiate(cfg.model), mel=instantiate(cfg.data.mel))
    optim = module.configure_optimizers()
    optimizer, scheduler = optim["optimizer"], optim["lr_scheduler"]["scheduler"]
    for _ in range(150):
        loss = module.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    module.eval()
    n = len(batch["ids"])
    with torch.no_grad():
        speaker = module._speaker(batch)
        zero_shot = module._forward(batch, speaker, {})
        one_shot = module._forward(batch, speaker, module._prompt(batch, torch.ones(n, dtype=torch.bool)))
    assert zero_shot.accuracy.item() > 0.95 and one_shot.accuracy.item() > 0.95


def test_the_auxiliary_weights_add_their_losses_to_the_training_objective(shared_prepared, tmp_path):
    """``model.text_ctc_weight`` and ``model.align_weight``: the stage trains on the token loss plus the
    weighted CTC and guided-attention losses, and reports the token loss alone as the loss."""
    cfg, batch = stage_config_and_batch(shared_prepared, tmp_path, "model.text_ctc_weight=0.5",
                                        "model.align_weight=0.3", "stage.prompt_prob=0")  # fmt: skip
    torch.manual_seed(0)
    module = instantiate(cfg.stage, model=instantiate(cfg.model), mel=instantiate(cfg.data.mel)).eval()
    with torch.no_grad():
        objective = module.training_step(batch, 0)
        out = module._forward(batch, module._speaker(batch), {})
    assert out.text_ctc is not None and out.text_ctc > 0 and 0 < out.align < 1
    torch.testing.assert_close(objective, out.loss + 0.5 * out.text_ctc + 0.3 * out.align)


def test_the_aligned_recipe_gets_text_starts_and_trains_its_pointer_head(shared_prepared, tmp_path):
    """``experiment=ar_tiny_aligned``: the batch carries where each text token starts (non-decreasing,
    within the audio), the objective adds the pointer head's loss, and the text gain rolls the starts too.
    The prompt's (reference's) tokens come along, its alignments, which nothing reads, do not."""
    cfg, batch = stage_config_and_batch(shared_prepared, tmp_path, "stage.prompt_prob=0",
                                        experiment="ar_tiny_aligned")  # fmt: skip
    assert cfg.model.hint_pointer and cfg.model.text_hint and cfg.model.hint_context
    assert "ref_tokens" in batch and "alignments" in batch and "ref_alignments" not in batch
    starts, lens = batch["text_starts"], batch["text_lens"]
    assert starts.shape == batch["text_tokens"].shape
    for row, n, k in zip(starts, lens, batch["tokens_lens"], strict=True):
        assert torch.all(row[1:n] >= row[: n - 1]) and 0 <= row[0] and row[n - 1] <= k
    torch.manual_seed(0)
    module = instantiate(cfg.stage, model=instantiate(cfg.model), mel=instantiate(cfg.data.mel)).eval()
    with torch.no_grad():
        objective = module.training_step(batch, 0)
        speaker, out = module.zero_shot(batch)
        gain = module.text_gain(batch, speaker, out)
        content = module.content_gain(batch, speaker, out)
    assert out.advance is not None and out.advance > 0 and torch.isfinite(gain) and torch.isfinite(content)
    torch.testing.assert_close(objective, out.loss + out.advance)


def test_another_rows_text_at_this_rows_length_for_the_content_gain():
    batch = {"text_tokens": torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0], [1, 2, 3, 4]]),
             "text_lens": torch.tensor([3, 2, 4])}  # fmt: skip
    # row 0 gets row 2's tokens cut to 3; row 1 row 0's cut to 2; row 2 row 1's repeated to 4
    assert other_text(batch).tolist() == [[1, 2, 3, 0], [5, 6, 0, 0], [8, 9, 8, 9]]
