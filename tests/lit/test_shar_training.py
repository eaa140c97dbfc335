"""Training from Lhotse Shar shards (issue 15): a prepared corpus exported with its token and latent caches
(``scripts/export_shar.py``) gives the DataModule of every stage the same batches as the cut manifest and
the cache folders, for one process and for each rank of two, and train.py trained from the shards ends with
the weights of the run trained from the manifest."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from script_runs import run_script
from test_ar_stage import TINY as AR_TINY
from test_flow_matching_stage import TINY as FM_TINY
from test_flow_matching_stage import fake_caches

from speech.data.cache import FeatureCache
from speech.data.prepare import prepared_cuts
from speech.data.shar import ShardFeatures, export_shar, read_shar
from speech.lit.datamodule import SpeechDataModule

ROOT = Path(__file__).resolve().parents[2]
EXPORT, TRAIN = ROOT / "scripts" / "export_shar.py", ROOT / "train.py"

# the data settings of the stages (the emotion adapter's are the AR's, on the cuts of one emotion)
STAGES = {
    "tokenizer/flow_vae": {"references": False},
    "ar": {"ref_features": True, "features": ["tokens"]},
    "flow_matching": {"max_ref_duration": 3.0, "features": ["tokens", "latents"]},
}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shards(shared_prepared, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shar")
    caches = fake_caches(shared_prepared, tmp / "cache")
    export_shar(shared_prepared, tmp / "shar", shard_size=8, features=caches)
    return {"prepared": shared_prepared, "caches": caches, "shar": tmp / "shar"}


def epochs(datamodule: SpeechDataModule, n: int = 2) -> list[dict]:
    datamodule.setup()
    loader = datamodule.train_dataloader()
    out = []
    for epoch in range(n):
        loader.sampler.set_epoch(epoch)
        out += list(loader)
    return out


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize(("world_size", "rank"), [(1, 0), (2, 0), (2, 1)])
def test_shards_give_the_batches_of_the_manifest(shards, stage, world_size, rank, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", str(world_size))  # what the Lhotse sampler reads first
    monkeypatch.setenv("RANK", str(rank))
    options = dict(STAGES[stage])
    keys = options.pop("features", [])
    common = {"max_duration": 4, "num_workers": 0, "seed": 3, **options}
    manifest = SpeechDataModule(shards["prepared"], features={k: shards["caches"][k] for k in keys}, **common)
    shar = SpeechDataModule("unused", shar_dir=shards["shar"], features={k: "unused" for k in keys}, **common)
    expected, got = epochs(manifest), epochs(shar)
    assert len(got) == len(expected) >= 2
    for a, b in zip(expected, got, strict=True):
        assert a.keys() == b.keys() and set(keys) <= a.keys()
        for key, value in a.items():
            assert torch.equal(value, b[key]) if isinstance(value, torch.Tensor) else value == b[key], key


TINY = {"ar": [*AR_TINY, "stage.prompt_prob=0.5"], "flow_matching": [*FM_TINY, "stage.val_sample_steps=2"]}


@pytest.mark.parametrize("stage", ["ar", "flow_matching"])
def test_train_py_from_shards_ends_where_the_manifest_run_does(shards, stage, tmp_path):
    caches = shards["caches"]
    features = {"ar": ["tokens"], "flow_matching": ["tokens", "latents"]}[stage]
    common = [f"experiment={stage}_tiny", "data.datamodule.num_workers=0", "data.datamodule.max_duration=4",
              *TINY[stage], "trainer.max_steps=3", "++trainer.limit_val_batches=0",
              "trainer.enable_progress_bar=false"]  # fmt: skip
    manifest = [f"data.prepared_dir={shards['prepared']}",
                *[f"data.datamodule.features.{k}={caches[k]}" for k in features]]  # fmt: skip
    run_script(TRAIN, *common, *manifest, f"paths.log_dir={tmp_path / 'manifest'}")
    # from the shards alone: no cut manifest, no cache folder (the AR's text vocabulary reads the BPE)
    (tmp_path / "bpe_only").mkdir()
    shutil.copy(shards["prepared"] / "bpe.json", tmp_path / "bpe_only")
    shar = [f"data.prepared_dir={tmp_path / 'bpe_only'}", f"data.datamodule.shar_dir={shards['shar']}",
            *[f"data.datamodule.features.{k}={tmp_path / 'none'}" for k in features]]  # fmt: skip
    run_script(TRAIN, *common, *shar, f"paths.log_dir={tmp_path / 'shar'}")
    weights = [
        torch.load(tmp_path / run / f"{stage}_tiny/checkpoints/last.ckpt", weights_only=False)["state_dict"]
        for run in ("manifest", "shar")
    ]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_the_export_script_puts_the_cache_of_a_checkpoint_in_the_shards(
    shared_prepared, tmp_path, monkeypatch
):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # the error itself, not Hydra's exit
    checkpoint = tmp_path / "tokenizer.ckpt"
    checkpoint.write_bytes(b"the cache is keyed by these bytes")
    cache = FeatureCache.for_checkpoint(tmp_path / "cache", "tokens", checkpoint)
    for cut in prepared_cuts(shared_prepared):
        cache.save(cut.id, np.full(3, len(cut.id), dtype=np.int32))
    args = [f"data.prepared_dir={shared_prepared}", f"paths.cache_dir={tmp_path / 'cache'}",
            f"out={tmp_path / 'shar'}", f"features.tokens={checkpoint}"]  # fmt: skip
    run_script(EXPORT, *args)
    cuts = read_shar(tmp_path / "shar", "val")
    tokens = ShardFeatures("tokens", cuts)
    assert [tokens.load(c.id).tolist() for c in cuts] == [[len(c.id)] * 3 for c in cuts]
    with pytest.raises(
        FileNotFoundError, match=r"no latents cache for .*`python scripts/encode.py kind=latents ckpt="
    ):
        run_script(EXPORT, *args, f"features.latents={checkpoint}")
