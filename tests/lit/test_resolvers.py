"""speech/lit/resolvers.py: sizes read from an upstream checkpoint's stored config, without its model, and the
main job's checkpoints read from the list it writes."""

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from speech.lit.resolvers import (
    MAIN_JOB_CHECKPOINTS,
    codebook_size,
    codebooks,
    latent_dim,
    main_job,
    register_resolvers,
)

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


def test_serve_defaults_to_the_checkpoints_the_main_job_listed(tmp_path, monkeypatch):
    """serve.py's default models are the main job's, whatever folders its budgets gave them; before the main
    job has run, or after its checkpoints are gone, the error says what to do."""
    register_resolvers()
    configs = str(Path(__file__).resolve().parents[2] / "configs")

    def served() -> dict:
        with initialize_config_dir(configs, version_base="1.3"):
            cfg = compose("entry/serve", overrides=[f"paths.root_dir={tmp_path}"])
        return OmegaConf.to_container(cfg, resolve=True)["models"]["speech-02-hd"]

    with pytest.raises(Exception, match=r"checkpoints.json not found: run the main job"):
        served()
    ckpts = {"ar": "logs/ar_tiny_aligned_tok1500/checkpoints/last.ckpt",
             "flow_matching": "logs/flow_matching_tiny_tok1500/checkpoints/last.ckpt"}  # fmt: skip
    for path in ckpts.values():
        (tmp_path / path).parent.mkdir(parents=True)
        (tmp_path / path).write_bytes(b"weights")
    (tmp_path / MAIN_JOB_CHECKPOINTS).parent.mkdir(parents=True)
    (tmp_path / MAIN_JOB_CHECKPOINTS).write_text(json.dumps({"checkpoints": ckpts, "ar_aligned": True}))
    model = served()
    assert (model["ar_ckpt"], model["fm_ckpt"]) == (
        str(tmp_path / ckpts["ar"]),
        str(tmp_path / ckpts["flow_matching"]),
    )
    with pytest.raises(KeyError, match=r"no stage 'ar_aligned'; it lists \['ar', 'flow_matching'\]"):
        main_job("ar_aligned", str(tmp_path))
    (tmp_path / ckpts["ar"]).unlink()
    with pytest.raises(
        FileNotFoundError, match=r"ar_tiny_aligned_tok1500.*not found: run the main job again"
    ):
        main_job("ar", str(tmp_path))
