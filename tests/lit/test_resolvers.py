"""speech/lit/resolvers.py: sizes read from an upstream checkpoint's stored config, without its model."""

import pytest
import torch

from speech.lit.resolvers import codebook_size, codebooks, latent_dim

# A model target that fails if anything builds it: the resolvers must read the config, not the model.
UNBUILDABLE = "speech.no_such_module.Model"


def stored(tmp_path, model: dict):
    path = tmp_path / "last.ckpt"
    torch.save({"config": {"model": {"_target_": UNBUILDABLE, **model}}, "state_dict": {}}, path)
    return str(path)


@pytest.mark.parametrize(
    ("kind", "expected"), [("vq", 37), ("fsq", 3 * 5 * 4)], ids=["vq", "fsq: the product of the levels"]
)
def test_codebook_size_comes_from_the_stored_quantizer(tmp_path, kind, expected):
    quantizer = {"_target_": "speech.modules.quantizers.build_quantizer", "kind": kind, "dim": 8,
                 "fsq": {"levels": [3, 5, 4]}, "vq": {"codebook_size": 37, "codebook_dim": 4}}  # fmt: skip
    assert codebook_size(stored(tmp_path, {"quantizer": quantizer})) == expected


@pytest.mark.parametrize(("stored_codebooks", "ids"), [(None, 37), (1, 37), (2, 37**2)])
def test_residual_codebooks_come_from_the_stored_quantizer(tmp_path, stored_codebooks, ids):
    """A tokenizer stored before ``codebooks`` existed has one; with two, its ids are ``C ** 2``."""
    quantizer = {"_target_": "speech.modules.quantizers.build_quantizer", "kind": "vq", "dim": 8,
                 "vq": {"codebook_size": 37, "codebook_dim": 4}}  # fmt: skip
    if stored_codebooks is not None:
        quantizer["codebooks"] = stored_codebooks
    ckpt = stored(tmp_path, {"quantizer": quantizer})
    assert codebooks(ckpt) == (stored_codebooks or 1) and codebook_size(ckpt) == ids


def test_latent_dim_is_the_stored_decoders_input(tmp_path):
    ckpt = stored(tmp_path, {"encoder": {"out_channels": 24}, "decoder": {"in_channels": 12}})
    assert latent_dim(ckpt) == 12


def test_a_missing_upstream_checkpoint_says_to_train_that_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="train that stage first"):
        latent_dim(str(tmp_path / "nowhere.ckpt"))


def test_reading_the_codebooks_leaves_the_global_random_generator_alone(tmp_path):
    """Seeded runs must not depend on which resolvers their config uses (building a quantizer would draw)."""
    quantizer = {"_target_": "speech.modules.quantizers.build_quantizer", "kind": "vq", "dim": 8,
                 "codebooks": 2, "vq": {"codebook_size": 37, "codebook_dim": 4}}  # fmt: skip
    ckpt = stored(tmp_path, {"quantizer": quantizer})
    torch.manual_seed(0)
    assert codebooks(ckpt) == 2
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))
