"""Rebuilding models from checkpoint files alone: every checkpoint carries its resolved config.

This is the one library module that turns configs into objects (checkpoints hold configs, not code).
A file that is not a readable checkpoint (truncated by a copy or a full disk) raises ``CheckpointError``
naming it, for inference and for a training resume alike (``readable``).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from speech.lit.ema import EMA_KEY


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: truncated or corrupt."""


@contextmanager
def readable(path: str | Path) -> Iterator[None]:
    """Turns what ``torch.load`` raises on bad bytes (zip, pickle or I/O errors) while reading ``path`` into
    a ``CheckpointError`` that names the file and what to do; a missing file stays ``FileNotFoundError``."""
    try:
        yield
    except FileNotFoundError:
        raise
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise CheckpointError(
            f"{path} is not a readable checkpoint, it is truncated or corrupt ({type(err).__name__}: {err}). "
            "Use another checkpoint of the run (ckpt_path=<file> to resume from it), or delete this one "
            "and train the stage again"
        ) from err


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by train.py, on the CPU.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is truncated or corrupt.
        ValueError: it holds no config (not written by train.py).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with readable(path):
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if "config" not in ckpt:
        raise ValueError(
            f"{path} carries no 'config': it was not written by train.py, cannot rebuild the model"
        )
    return ckpt


def checkpoint_config(ckpt: dict) -> DictConfig:
    return OmegaConf.create(ckpt["config"])


def build_model(
    path: str | Path, *, prefix: str = "model.", use_ema: bool = True
) -> tuple[torch.nn.Module, DictConfig]:
    """Rebuilds ``config.model`` and loads its weights (state-dict keys under ``prefix``), in eval mode.

    Args:
        path: A checkpoint written by ``train.py``.
        prefix: The model's key prefix in the LightningModule's state dict.
        use_ema: Load the EMA weights (``checkpoint["ema_state_dict"]``, ``speech.lit.ema``) when the
            checkpoint has them; otherwise, or when False, the trained weights.

    Raises:
        ValueError: the checkpoint's weights do not fit the rebuilt model (names the keys).
    """
    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt)
    model = instantiate(cfg.model)
    weights = ckpt[EMA_KEY] if use_ema and EMA_KEY in ckpt else ckpt["state_dict"]
    state = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not match config.model: missing {missing}, unexpected {unexpected}"
        )
    return model.eval(), cfg


def build_component(cfg: DictConfig, key: str):
    """Instantiates ``cfg.<key>`` (a dotted key such as ``"data.mel"``) of a checkpoint's config."""
    node = OmegaConf.select(cfg, key)
    if node is None:
        raise KeyError(f"the checkpoint's config has no '{key}'")
    return instantiate(node)


def pretrained_model(path: str | Path, use_ema: bool = True) -> torch.nn.Module:
    """The model of a checkpoint, for configs that start from trained weights
    (``model: {_target_: speech.lit.checkpoint.pretrained_model, path: ...}``)."""
    return build_model(path, use_ema=use_ema)[0]
