"""Fixtures of tests/inference: tiny random checkpoints and reference wavs (tiny_pipeline.py)."""

import pytest
from tiny_pipeline import write_checkpoints, write_references


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """Paths of tiny AR, flow-matching, tokenizer and Flow-VAE checkpoints by name."""
    return write_checkpoints(tmp_path_factory.mktemp("ckpts"))


@pytest.fixture(scope="session")
def references(tmp_path_factory):
    """Three reference wavs of 0.8, 1.2 and 1.6 s at 16 kHz."""
    return write_references(tmp_path_factory.mktemp("refs"))
