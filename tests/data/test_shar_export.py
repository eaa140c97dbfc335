import numpy as np
import pytest
from lhotse import CutSet

from speech.data.cache import FeatureCache
from speech.data.shar import ShardFeatures, export_shar, read_shar


def test_shar_shards_hold_every_cut_with_its_audio_and_features_in_manifest_order(shared_prepared, tmp_path):
    cache = FeatureCache(tmp_path / "tokens", meta={"kind": "tokens", "sha256": "t"})
    manifests = {
        s: CutSet.from_file(shared_prepared / f"{s}_cuts.jsonl.gz").to_eager() for s in ("train", "val")
    }
    for cut in [*manifests["train"], *manifests["val"]]:
        cache.save(cut.id, np.arange(int(cut.num_samples) // 640, dtype=np.int32) + len(cut.id))
    files = export_shar(shared_prepared, tmp_path / "shar", shard_size=8, features={"tokens": cache.root})
    assert len([f for f in files if "/train/recording" in f]) == 3  # 21 cuts in shards of 8
    assert (
        len([f for f in files if "/train/tokens" in f]) == 3 and str(tmp_path / "shar" / "bpe.json") in files
    )
    for split, manifest in manifests.items():
        back = read_shar(tmp_path / "shar", split)
        assert list(back.ids) == list(manifest.ids)  # the order the sampler's shuffle starts from
        features = ShardFeatures("tokens", back)
        for cut in back:
            original = manifest[cut.id]
            np.testing.assert_array_equal(cut.load_audio(), original.load_audio())  # flac: lossless
            assert cut.supervisions[0] == original.supervisions[0]
            np.testing.assert_array_equal(features.load(cut.id), cache.load(cut.id))


def test_missing_shards_and_features_name_the_fix(shared_prepared, tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"no Shar shards in .*train: export the prepared corpus first"
    ):
        read_shar(tmp_path, "train")
    export_shar(shared_prepared, tmp_path / "shar", shard_size=100)
    cuts = read_shar(tmp_path / "shar", "val")
    with pytest.raises(KeyError, match=r"no 'latents' in the Shar shards for cut .*features.latents="):
        ShardFeatures("latents", cuts).load(cuts[0].id)
