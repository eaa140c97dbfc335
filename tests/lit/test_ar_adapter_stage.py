"""The emotion adapter stage: experiment=ar_emotion_tiny trains only LoRA weights on a frozen base AR
checkpoint through train.py, on the cuts of one emotion with neutral references; its checkpoints hold the
adapter alone and resume; wrong data is refused with the fix."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from script_runs import run_script
from test_ar_stage import TINY, fake_alignment_cache, fake_token_cache

from speech.checkpoints import ADAPTER_KEY, file_sha256, load_adapter
from speech.data.manifest import CutRules, cut_emotion
from speech.data.prepare import prepare_corpus
from speech.data.records import Utterance
from speech.data.rejects import RejectLog
from speech.lit.checkpoint import pretrained_model
from speech.lit.datamodule import SpeechDataModule

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "train.py"
WORDS = "alpha beta gamma delta epsilon zeta eta theta".split()

pytestmark = pytest.mark.usefixtures("one_thread")


def emotion_corpus(root: Path, bpe_reuse: Path | None) -> Path:
    """3 speakers x 4 texts, each said neutral and happy (noise clips; happy ones shorter and louder)."""
    rng = np.random.default_rng(1)
    utts = []
    for s in range(3):
        for u in range(4):
            text = " ".join(WORDS[u : u + 4])
            for emotion, seconds, gain in (("neutral", 1.0, 0.1), ("happy", 0.8, 0.3)):
                path = root / "wav" / f"e{s}_{u}_{emotion}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, (gain * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000)
                utts.append(Utterance(f"e{s}_{u}_{emotion}", path, text, f"spk{s}", "en", emotion=emotion))
    out = root / "prepared"
    prepare_corpus(utts, out, rules=CutRules(min_duration=0.5), rejects=RejectLog(), bpe_vocab_size=300,
                   bpe_reuse=bpe_reuse, val_per_speaker=1, val_max_total=3, progress=False)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def base(shared_prepared, tmp_path_factory):
    """A base AR checkpoint: one step of experiment=ar_tiny on the shared corpus."""
    log_dir = tmp_path_factory.mktemp("ar_base")
    cache = fake_token_cache(shared_prepared, log_dir / "tokens")
    run_script(TRAIN, "experiment=ar_tiny", f"data.prepared_dir={shared_prepared}",
               f"paths.log_dir={log_dir}",
               f"data.datamodule.features.tokens={cache}", "data.datamodule.num_workers=0",
               "data.datamodule.max_duration=4", *TINY, "trainer.max_steps=1", "+trainer.limit_val_batches=0",
               "trainer.enable_progress_bar=false")  # fmt: skip
    return log_dir / "ar_tiny" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def emotion_prepared(shared_prepared, tmp_path_factory):
    return emotion_corpus(tmp_path_factory.mktemp("emotion_corpus"), shared_prepared / "bpe.json")


def adapter_args(base: Path, prepared: Path, log_dir: Path, emotion: str = "happy") -> list[str]:
    cache = fake_token_cache(prepared, log_dir / "tokens")
    return [
        "experiment=ar_emotion_tiny", f"emotion={emotion}", f"upstream.ar={base}",
        f"data.prepared_dir={prepared}", f"paths.log_dir={log_dir}",
        f"data.datamodule.features.tokens={cache}",
        "data.datamodule.num_workers=0", "data.datamodule.max_duration=4", "stage.optim.lr=0.01",
        "stage.optim.warmup_steps=1", "stage.lora.rank=2", "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1", "callbacks.checkpoint.every_n_train_steps=2",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(base, emotion_prepared, tmp_path_factory):
    """Two adapter steps through train.py, then the same command for four (a resume)."""
    log_dir = tmp_path_factory.mktemp("adapter_runs")
    base_sha = file_sha256(base)
    args = adapter_args(base, emotion_prepared, log_dir)
    run_script(TRAIN, *args, "trainer.max_steps=2")
    last = log_dir / "ar_emotion_tiny" / "happy" / "checkpoints" / "last.ckpt"
    first = torch.load(last, weights_only=False)
    run_script(TRAIN, *args, "trainer.max_steps=4")
    return {"first": first, "last": last, "base_sha": base_sha}


def test_checkpoints_hold_the_adapter_only_and_resume(trained, base):
    first, second = trained["first"], torch.load(trained["last"], weights_only=False)
    assert first["global_step"] == 2 and second["global_step"] == 4
    keys = sorted(second["state_dict"])
    layers = [f"blocks.{i}.{p}" for i in range(2) for p in ("attn.qkv", "attn.out", "ffn.w13", "ffn.w2")]
    assert keys == sorted(f"model.{layer}.lora_{ab}" for layer in layers for ab in "ab")
    assert (
        second[ADAPTER_KEY]["name"] == "happy" and second[ADAPTER_KEY]["base_sha256"] == trained["base_sha"]
    )
    assert second[ADAPTER_KEY]["lora"]["rank"] == 2 and "text_tokenizer" in second
    assert {int(s["step"]) for s in second["optimizer_states"][0]["state"].values()} == {4}
    assert len(second["optimizer_states"][0]["state"]) == len(keys)  # only A and B are optimized
    assert any(not torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in keys)
    assert file_sha256(base) == trained["base_sha"]  # the base is never written


def test_trained_adapter_changes_the_base_model(trained, base, emotion_prepared):
    adapter = load_adapter(trained["last"])
    assert adapter.name == "happy" and adapter.base_sha256 == trained["base_sha"]
    assert any(float(b.abs().max()) > 0 for _, b in adapter.weights.values())  # B left zero
    model = pretrained_model(base)
    kw = {"speaker": torch.randn(1, 16), "text": torch.tensor([[3, 4, 5]]), "text_lens": torch.tensor([3]),
          "audio_tokens": torch.tensor([[1, 2, 3, 4]]), "audio_lens": torch.tensor([4])}  # fmt: skip
    plain = model(**kw).logits
    with adapter.applied(model):
        adapted = model(**kw).logits
    assert (adapted - plain).abs().max() > 1e-4
    torch.testing.assert_close(model(**kw).logits, plain, rtol=0, atol=0)


def test_targets_get_neutral_references_of_their_speaker(emotion_prepared):
    dm = SpeechDataModule(emotion_prepared, max_duration=3, num_workers=0, emotion="happy",
                          reference_emotion="neutral")  # fmt: skip
    dm.setup()
    assert len(dm.train_cuts) and {cut_emotion(c) for c in dm.train_cuts} == {"happy"}
    assert {cut_emotion(c) for c in dm.val_cuts} <= {"happy"}
    batch = next(iter(dm.train_dataloader()))
    for target, ref, speaker in zip(batch["ids"], batch["ref_ids"], batch["speakers"], strict=True):
        assert target.endswith("_happy") and ref.endswith("_neutral")
        assert ref.startswith(f"e{speaker[-1]}_")
    dm = SpeechDataModule(emotion_prepared, num_workers=0, emotion="angry")
    with pytest.raises(
        ValueError, match=r"no training cuts with emotion 'angry'.*have \['happy', 'neutral'\]"
    ):
        dm.setup()


def test_data_with_another_bpe_is_refused(base, tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # errors propagate instead of sys.exit(1)
    prepared = emotion_corpus(tmp_path / "own_bpe", bpe_reuse=None)  # trains its own BPE
    with pytest.raises(ValueError, match=r"text BPE is not the base AR model's.*data.bpe.reuse"):
        run_script(TRAIN, *adapter_args(base, prepared, tmp_path / "logs"), "trainer.max_steps=1")


def test_missing_bpe_to_reuse_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"bpe.reuse: .*nope.json not found; prepare the corpus"):
        emotion_corpus(tmp_path, bpe_reuse=tmp_path / "nope.json")


def test_an_aligned_base_model_gets_adapters_trained_on_alignments(
    shared_prepared, emotion_prepared, tmp_path, monkeypatch
):
    """The main job's AR model reads text-aligned hints: its adapters need the emotive cuts' alignments
    (``experiment=ar_emotion_tiny_aligned``, which the emotion job picks for it); the plain adapter
    experiment on it names the missing feature."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    tokens = fake_token_cache(shared_prepared, tmp_path / "base_tokens")
    alignments = fake_alignment_cache(shared_prepared, tmp_path / "base_alignments")
    run_script(TRAIN, "experiment=ar_tiny_aligned", f"data.prepared_dir={shared_prepared}",
               f"paths.log_dir={tmp_path}", f"data.datamodule.features.tokens={tokens}",
               f"data.datamodule.features.alignments={alignments}", "data.datamodule.num_workers=0",
               "data.datamodule.max_duration=4", *TINY, "trainer.max_steps=1", "+trainer.limit_val_batches=0",
               "trainer.enable_progress_bar=false")  # fmt: skip
    base = tmp_path / "ar_tiny_aligned" / "checkpoints" / "last.ckpt"
    args = adapter_args(base, emotion_prepared, tmp_path)
    with pytest.raises(ValueError, match="a hint_pointer model trains on text_starts"):
        run_script(TRAIN, *args, "trainer.max_steps=1")
    emotive = fake_alignment_cache(emotion_prepared, tmp_path / "alignments")
    aligned = [a.replace("experiment=ar_emotion_tiny", "experiment=ar_emotion_tiny_aligned") for a in args]
    run_script(TRAIN, *aligned, f"data.datamodule.features.alignments={emotive}", "trainer.max_steps=1",
               "name=aligned/happy")  # fmt: skip
    adapter = torch.load(tmp_path / "aligned/happy/checkpoints/last.ckpt", weights_only=False)
    assert adapter["global_step"] == 1 and adapter[ADAPTER_KEY]["base_sha256"] == file_sha256(base)
