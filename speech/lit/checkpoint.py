"""A trained model as a config node, for stages that build on one (``configs/model/ar_pretrained.yaml``: the
LoRA adapter stage trains on a frozen AR model). Reading checkpoints is ``speech.checkpoints``."""

from __future__ import annotations

from pathlib import Path

import torch

from speech.checkpoints import build_model


def pretrained_model(path: str | Path, use_ema: bool = True) -> torch.nn.Module:
    """The model of a checkpoint, for configs that start from trained weights
    (``model: {_target_: speech.lit.checkpoint.pretrained_model, path: ...}``)."""
    return build_model(path, use_ema=use_ema)[0]
