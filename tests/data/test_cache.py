import numpy as np
import pytest

from speech.data.cache import FeatureCache


def test_keyed_by_checkpoint_bytes(tmp_path):
    ckpt = tmp_path / "tok.ckpt"
    ckpt.write_bytes(b"weights v1")
    a = FeatureCache.for_checkpoint(tmp_path / "cache", "tokens", ckpt)
    a.save("spk/utt1", np.arange(5))
    assert a.has("spk/utt1") and a.load("spk/utt1").tolist() == [0, 1, 2, 3, 4]
    assert a.missing(["spk/utt1", "utt2"]) == ["utt2"]
    ckpt.write_bytes(b"weights v2")  # retrained: a new key, an empty cache
    b = FeatureCache.for_checkpoint(tmp_path / "cache", "tokens", ckpt)
    assert b.root != a.root and not b.has("spk/utt1")
    reopened = FeatureCache(a.root)
    assert reopened.load("spk/utt1").tolist() == [0, 1, 2, 3, 4]
    assert reopened.meta["kind"] == "tokens"


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="keys the 'latents' feature cache"):
        FeatureCache.for_checkpoint(tmp_path, "latents", tmp_path / "missing.ckpt")
    with pytest.raises(FileNotFoundError, match="run the stage's encode command"):
        FeatureCache(tmp_path / "nothing")
    cache = FeatureCache(tmp_path / "c", {"kind": "tokens", "sha256": "aa"})
    with pytest.raises(KeyError, match="no cached tokens for cut 'x'"):
        cache.load("x")
    with pytest.raises(ValueError, match="other producer|not bb"):
        FeatureCache(tmp_path / "c", {"kind": "tokens", "sha256": "bb"})


def test_save_leaves_no_temp_files(tmp_path):
    cache = FeatureCache(tmp_path / "c", {"kind": "latents", "sha256": "aa"})
    for i in range(5):
        cache.save(f"u{i}", np.zeros((3, 2), np.float32))
    assert not list(cache.root.rglob("*.tmp"))
    assert len(list(cache.root.rglob("*.npy"))) == 5


def test_arrays_yields_every_cached_array_once(tmp_path):
    cache = FeatureCache(tmp_path / "c", meta={"kind": "latents", "sha256": "x"})
    saved = {f"cut{i}": np.full((i + 1, 2), i, dtype=np.float32) for i in range(5)}
    for cut, array in saved.items():
        cache.save(cut, array)
    got = sorted(list(cache.arrays()), key=len)
    assert len(got) == 5 and all(np.array_equal(a, saved[f"cut{i}"]) for i, a in enumerate(got))
    assert list(FeatureCache(tmp_path / "e", meta={"kind": "latents", "sha256": "y"}).arrays()) == []


def test_a_cut_of_the_same_id_from_another_source_is_refused(tmp_path):
    """Cut ids repeat across corpora: ``check_source`` tells the cached array's recording from another."""
    cache = FeatureCache(tmp_path / "c", meta={"kind": "tokens", "sha256": "x"})
    cache.save("spk-en-001", np.arange(4, dtype=np.int32), source="spk-en-001.wav 64000 0.000+4.000")
    cache.save("old", np.arange(3, dtype=np.int32))  # saved before sources were written
    cache.check_source("spk-en-001", "spk-en-001.wav 64000 0.000+4.000")
    cache.check_source("old", "anything")
    with pytest.raises(ValueError, match="two corpora share cut ids.*another cache folder"):
        cache.check_source("spk-en-001", "spk-en-001.wav 51200 0.000+3.200")
    assert np.array_equal(cache.load("spk-en-001"), np.arange(4)) and not list(cache.root.rglob("*.tmp"))
