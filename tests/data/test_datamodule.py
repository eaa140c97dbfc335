"""Batches, references and exact mid-epoch resume through a real Lightning Trainer."""

import json

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from speech.lit.datamodule import SpeechDataModule
from speech.text import espeak
from speech.text.phonemes import PHONEMIZER, ipa
from tests.conftest import make_prepared


def make_dm(prepared, **kw):
    kw = {"max_duration": 3.0, "num_buckets": 2, "num_workers": 0, "seed": 0, **kw}
    dm = SpeechDataModule(prepared, **kw)
    dm.setup("fit")
    return dm


def test_batch_contents(prepared):
    dm = make_dm(prepared, max_ref_duration=0.7)
    speaker = {c.id: c.supervisions[0].speaker for c in dm.train_cuts}
    n = 0
    for batch in dm.train_dataloader():
        b = len(batch["ids"])
        n += b
        assert batch["audio"].shape[0] == b and batch["audio_mask"].dtype == torch.bool
        assert torch.equal(batch["audio_mask"].sum(1), batch["audio_lens"])
        assert float(batch["audio_lens"].sum()) / 16000 <= 3.0
        assert torch.equal(batch["text_mask"].sum(1), batch["text_lens"])
        assert (batch["text_tokens"][~batch["text_mask"]] == dm.bpe.pad_id).all()
        decoded = [
            dm.bpe.decode(t[:n_].tolist())
            for t, n_ in zip(batch["text_tokens"], batch["text_lens"], strict=True)
        ]
        assert decoded == batch["texts"]
        for cut_id, ref_id in zip(batch["ids"], batch["ref_ids"], strict=True):
            assert ref_id != cut_id and speaker[ref_id] == speaker[cut_id]
        assert batch["ref_audio_lens"].max() <= int(0.7 * 16000) + 1
    assert n >= 15  # drop_last may leave a remainder out


@pytest.mark.skipif(not espeak.available(), reason="needs libespeak-ng (apt-get install espeak-ng)")
def test_a_corpus_prepared_for_phonemes_feeds_the_ipa_of_each_transcript(tmp_path):
    prepared = make_prepared(tmp_path, phonemes=PHONEMIZER)
    assert json.loads((prepared / "summary.json").read_text())["bpe_phonemes"] == PHONEMIZER
    dm = make_dm(prepared, references=False)
    batch = next(iter(dm.train_dataloader()))
    for text, tokens, n in zip(batch["texts"], batch["text_tokens"], batch["text_lens"], strict=True):
        assert dm.bpe.decode(tokens[:n].tolist()) == ipa(text, "en") != text


def test_a_one_cut_validation_set_gives_one_batch(prepared):
    from lhotse import CutSet

    val = CutSet.from_file(prepared / "val_cuts.jsonl.gz")
    val.subset(first=1).to_file(prepared / "val_cuts.jsonl.gz")
    batches = list(make_dm(prepared, num_buckets=8).val_dataloader())
    assert [b["ids"] for b in batches] == [[next(iter(val)).id]]


def test_references_change_with_epoch_but_are_reproducible(prepared):
    def refs(epoch):
        dm = make_dm(prepared)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return {i: r for batch in loader for i, r in zip(batch["ids"], batch["ref_ids"], strict=True)}

    e0, e0_again, e1 = refs(0), refs(0), refs(1)
    assert e0 == e0_again
    common = set(e0) & set(e1)
    assert any(e0[i] != e1[i] for i in common)


def test_unreadable_audio_is_dropped_from_its_batch(prepared, tmp_path):
    dm = make_dm(prepared, references=False)
    victim = next(iter(dm.train_dataloader()))["ids"][0]  # same epoch, same order on the next pass
    (tmp_path / "wav" / f"{victim}.wav").write_bytes(b"corrupted")
    seen, dropped = set(), 0
    for batch in dm.train_dataloader():
        seen.update(batch["ids"])
        dropped += batch["dropped"]
    assert victim not in seen and dropped == 1


def test_missing_prepared_files_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `python scripts/prepare_data.py"):
        SpeechDataModule(tmp_path).setup("fit")


class Recorder(L.LightningModule):
    """Records the cut ids of every training batch; one parameter so the optimizer has state."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def training_step(self, batch, _):
        self.seen.append(tuple(batch["ids"]))
        return (self.w - batch["audio"].mean()).pow(2).sum()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.1)


class Crash(Exception):
    pass


class CrashAt(L.Callback):
    """Kills the run at a given step, after the checkpoint before it was written."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, *_):
        if trainer.global_step == self.step:
            raise Crash(f"killed at step {self.step}")


def fit(prepared, tmp_path, max_steps, ckpt=None, callbacks=()):
    trainer = L.Trainer(
        max_steps=max_steps, max_epochs=100, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False, limit_val_batches=0,
        default_root_dir=tmp_path, callbacks=list(callbacks), enable_checkpointing=bool(callbacks),
    )  # fmt: skip
    model = Recorder()
    dm = SpeechDataModule(prepared, max_duration=3.0, num_buckets=2, num_workers=0)
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
    except Crash:
        pass
    return trainer, model


@pytest.mark.parametrize("saved_at", [5, 10])  # inside the first epoch (about 7 batches), inside the second
def test_killed_run_resumes_with_the_next_batch(prepared, tmp_path, saved_at):
    _, full = fit(prepared, tmp_path / "full", max_steps=14)
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=saved_at, save_top_k=-1)
    _, killed = fit(prepared, tmp_path / "a", max_steps=14, callbacks=[saver, CrashAt(saved_at + 2)])
    assert len(killed.seen) == saved_at + 2  # it trained past the checkpoint before dying
    (ckpt,) = (tmp_path / "ckpt").glob(f"*step={saved_at}.ckpt")
    _, resumed = fit(prepared, tmp_path / "b", max_steps=14, ckpt=str(ckpt))
    assert len(full.seen) == 14
    assert killed.seen[:saved_at] + resumed.seen == full.seen


def test_ref_features_give_the_whole_reference(prepared, tmp_path):
    import numpy as np

    from speech.data.cache import FeatureCache

    cache = FeatureCache(tmp_path / "tokens", meta={"kind": "tokens", "sha256": "test"})
    dm0 = make_dm(prepared)
    cuts = {c.id: c for c in [*dm0.train_cuts, *dm0.val_cuts]}
    for cut in cuts.values():
        cache.save(cut.id, np.full(int(cut.num_samples) // 640, hash(cut.id) % 1000, dtype=np.int32))
    dm = make_dm(prepared, max_ref_duration=0.3, features={"tokens": str(cache.root)}, ref_features=True)
    batch = next(iter(dm.train_dataloader()))
    for row, ref_id in enumerate(batch["ref_ids"]):
        ref = cuts[ref_id]
        n = batch["ref_text_lens"][row].item()
        assert dm.bpe.decode(batch["ref_text_tokens"][row, :n].tolist()) == ref.supervisions[0].text
        k = batch["ref_tokens_lens"][row].item()
        assert k == int(ref.num_samples) // 640  # uncropped, unlike ref_audio (0.3 s)
        assert (batch["ref_tokens"][row, :k] == hash(ref_id) % 1000).all()
    assert batch["ref_audio_lens"].max() <= int(0.3 * 16000) + 1
    plain = next(iter(make_dm(prepared, features={"tokens": str(cache.root)}).train_dataloader()))
    assert "ref_tokens" not in plain and "ref_text_tokens" not in plain


def test_a_missing_cached_feature_drops_the_cut_for_target_and_reference(prepared, tmp_path):
    import numpy as np
    from lhotse import CutSet

    from speech.data.cache import FeatureCache

    cache = FeatureCache(tmp_path / "tokens", meta={"kind": "tokens", "sha256": "test"})
    dm = make_dm(prepared, features={"tokens": str(cache.root)}, ref_features=True)
    for cut in [*dm.train_cuts, *dm.val_cuts]:
        cache.save(cut.id, np.zeros(int(cut.num_samples) // 640, dtype=np.int32))
    dataset = dm.train_dataloader().dataset
    by_speaker = {}
    for cut in dm.train_cuts:
        by_speaker.setdefault(cut.supervisions[0].speaker, []).append(cut)
    a, b, c = (cuts[0] for cuts in by_speaker.values())  # three speakers: no cut references another
    cache.path(a.id).unlink()  # a's own tokens
    cache.path(dataset.references.reference_for(b).id).unlink()  # the tokens of b's reference
    batch = dataset[CutSet.from_cuts([a, b, c])]
    assert batch["ids"] == [c.id] and batch["dropped"] == 2
    assert dataset.dropped == {"feature 'tokens'": 1, "reference feature 'tokens'": 1}


def test_ref_features_need_references(prepared):
    with pytest.raises(ValueError, match="ref_features=True needs references"):
        make_dm(prepared, references=False, ref_features=True)


def test_prepared_cuts_are_train_plus_val_and_missing_ones_name_the_command(shared_prepared, tmp_path):
    from speech.data.prepare import prepared_cuts

    ids = [c.id for c in prepared_cuts(shared_prepared)]
    assert len(ids) == 24 and len(set(ids)) == 24  # 21 train + 3 val, none twice
    with pytest.raises(FileNotFoundError, match="prepare_data.py"):
        prepared_cuts(tmp_path)


def _relabel(prepared, speaker, language):
    from lhotse import CutSet

    for name in ("train_cuts.jsonl.gz", "val_cuts.jsonl.gz"):
        cuts = CutSet.from_file(prepared / name).to_eager()
        for cut in cuts:
            if cut.supervisions[0].speaker == speaker:
                cut.supervisions[0].language = language
        cuts.to_file(prepared / name)


def test_languages_keep_only_those_cuts_for_targets_validation_and_references(prepared):
    _relabel(prepared, "spk1", "de")
    everything = make_dm(prepared)
    assert {c.supervisions[0].speaker for c in everything.train_cuts} == {"spk0", "spk1", "spk2"}
    dm = make_dm(prepared, languages=["en"])
    for cuts in (dm.train_cuts, dm.val_cuts, dm.reference_cuts):
        assert len(cuts) and {c.supervisions[0].language for c in cuts} == {"en"}
    seen = [
        (i, r) for batch in dm.train_dataloader() for i, r in zip(batch["ids"], batch["ref_ids"], strict=True)
    ]
    assert seen and not any(i.startswith("s1_") or r.startswith("s1_") for i, r in seen)
    german = make_dm(prepared, languages=["de"])
    assert {c.supervisions[0].speaker for c in german.train_cuts} == {"spk1"}


def test_a_language_with_no_cuts_is_refused_naming_the_ones_there_are(prepared):
    with pytest.raises(ValueError, match=r"no cuts in languages \['fr'\].*\['en'\]"):
        make_dm(prepared, languages=["fr"])


def test_an_epoch_without_a_training_batch_names_the_fix(shared_prepared, monkeypatch):
    # 21 cuts in batches of 100 s, split between two ranks: every bucket's only batch is partial and dropped
    # (Lightning would otherwise start empty epochs forever, never reaching max_steps)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    dm = SpeechDataModule(shared_prepared, max_duration=100, num_workers=0, references=False)
    dm.setup()
    with pytest.raises(
        ValueError, match=r"no training batch in an epoch for rank 1 of 2: 21 cuts in batches of"
    ):
        next(iter(dm.train_dataloader()))
    assert len(list(dm.val_dataloader())) == 1  # validation keeps partial batches: one for this rank
