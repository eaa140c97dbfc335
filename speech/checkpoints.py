"""Checkpoint files: reading them, rebuilding their models from the resolved config each one carries, and
checking that one fits a run before it resumes. Lightning-free, so inference and evaluation read checkpoints
without importing Lightning; ``speech.lit`` writes them.

This is the one library module that turns configs into objects (checkpoints hold configs, not code).
A file that is not a readable checkpoint (truncated by a copy or a full disk) raises ``CheckpointError``
naming it, for inference and for a training resume alike (``readable``). A resume checks that the checkpoint
fits the model the run builds (``ResumeCheck``): other shapes are refused naming the settings that differ,
other settings that keep the shapes (a longer ``trainer.max_steps``) are logged and allowed.

What a checkpoint holds besides Lightning's own keys: ``config`` (the resolved run config), its run's
lineage (``run_lineage``: one id from a run's first step through all its resumes), ``EMA_KEY``
(the EMA weights, ``speech.lit.ema``), ``ADAPTER_KEY`` (a LoRA adapter, ``speech.lit.ar_adapter``) and, for
the AR stage, ``TEXT_BPE_KEY`` (its text BPE). A checkpoint's SHA-256 (``file_sha256``) keys the feature
caches and ties an adapter to its base.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from speech.modules.lora import LoRAAdapter, LoRAConfig

EMA_KEY = "ema_state_dict"  # checkpoint[EMA_KEY]: the EMA shadow, keyed as the state dict
ADAPTER_KEY = "adapter"  # checkpoint["adapter"]: {"name", "lora", "base", "base_sha256"}
# checkpoint[TEXT_BPE_KEY]: the AR stage's ``TextBPE.to_str()``. The key keeps its old name although the
# class is now ``TextBPE`` ("tokenizer" means the audio tokenizer), so every AR checkpoint written loads.
TEXT_BPE_KEY = "text_tokenizer"
MODEL_PREFIX = "model."  # the model's key prefix in a LightningModule's state dict
ADAPTER_TRAIN_COMMAND = "python train.py experiment=ar_emotion_tiny emotion=<name>"
MAX_LISTED = 8  # settings named in a message; the rest are counted
MISFITS_SHOWN = 2  # parameters named as examples when a resume does not fit
TOKEN_FEATURES = "data.datamodule.features.tokens"  # the token cache a run reads (``<stem>-<sha256[:16]>``)
LATENT_FEATURES = "data.datamodule.features.latents"  # the latent cache a run reads
# what a refused resume can do instead (the end of each ResumeError's message)
TRAIN_ANEW = (
    "give it another name (name=...) or start over with ckpt_path=null "
    "(which overwrites this run's checkpoints)"
)
# checkpoint["callbacks"][LINEAGE_KEY]["id"]: the training run's lineage (``speech.lit.callbacks.RunLineage``)
LINEAGE_KEY = "RunLineage"
log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: truncated or corrupt."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (a full disk); the message names the file and says the previous one is
    kept."""


class ResumeError(ValueError):
    """A checkpoint whose weights do not fit the model this run builds (another shape, other parameters)."""


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


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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


def run_lineage(ckpt: dict) -> str | None:
    """The id a training run drew at its first step and keeps through every resume
    (``speech.lit.callbacks.RunLineage``): two checkpoints share it when one run wrote both, one continued
    from the other. None for a checkpoint written before runs had one."""
    return (ckpt.get("callbacks") or {}).get(LINEAGE_KEY, {}).get("id")


def checkpoint_config(ckpt: dict) -> DictConfig:
    return OmegaConf.create(ckpt["config"])


def build_model(
    path: str | Path, *, prefix: str = MODEL_PREFIX, use_ema: bool = True
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


def load_adapter(path: str | Path) -> LoRAAdapter:
    """Reads the LoRA adapter of a checkpoint written by ``speech.lit.ar_adapter.ARAdapterModule``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the checkpoint holds no adapter.
    """
    ckpt = load_checkpoint(path)
    meta = ckpt.get(ADAPTER_KEY)
    if meta is None:
        raise ValueError(f"{path} holds no LoRA adapter; train one with `{ADAPTER_TRAIN_COMMAND}`")
    config = LoRAConfig(**meta["lora"])
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in ckpt["state_dict"].items():
        layer, _, which = key.removeprefix(MODEL_PREFIX).rpartition(".")
        parts.setdefault(layer, {})[which] = value
    weights = {}
    for layer, pair in parts.items():
        if set(pair) != {"lora_a", "lora_b"}:
            raise ValueError(f"{path}: layer {layer!r} has {sorted(pair)}, expected lora_a and lora_b")
        weights[layer] = (pair["lora_a"], pair["lora_b"])
    return LoRAAdapter(meta["name"], config, weights, meta["base_sha256"])


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"dotted.key": leaf}``; lists and empty dicts are leaves."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree} if prefix else {}
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_changes(before: dict, after: dict) -> list[str]:
    """``"key: old -> new"`` for every dotted key whose value differs between two configs (``<unset>`` where
    one lacks it), sorted."""
    old, new = _flat(before), _flat(after)
    unset = "<unset>"
    return [
        f"{key}: {old.get(key, unset)!r} -> {new.get(key, unset)!r}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key, unset) != new.get(key, unset)
    ]


def _listed(items: list[str]) -> str:
    more = f"; and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return "; ".join(items[:MAX_LISTED]) + more


@dataclass
class ResumeCheck:
    """What a checkpoint must hold to resume this run: weights of the shapes the built module has, trained on
    the tokens this run reads.

    Called on the checkpoint a resume reads (``AtomicCheckpointIO(resume_check=...)``), before Lightning
    loads it: it refuses what ``load_state_dict`` would (another shape; with strict loading, missing or
    unexpected parameters) with a message that names the settings that differ from the checkpoint's
    config, and logs the settings that changed but keep the shapes (``trainer.max_steps``, a learning rate).
    It also refuses a run whose token cache another tokenizer checkpoint wrote (``_check_tokens``), and one
    whose latent cache a Flow-VAE trained from scratch since wrote (``_check_latents``).

    Attributes:
        shapes: The module's state-dict keys and shapes.
        config: The run's resolved config.
        strict: The module's ``strict_loading``: every parameter must be in the checkpoint.
    """

    shapes: dict[str, tuple[int, ...]]
    config: dict
    strict: bool = True

    @classmethod
    def of(cls, module: torch.nn.Module, config: dict) -> ResumeCheck:
        shapes = {key: tuple(value.shape) for key, value in module.state_dict().items()}
        return cls(shapes, config, bool(getattr(module, "strict_loading", True)))

    def misfits(self, state_dict: dict[str, torch.Tensor]) -> list[str]:
        """The parameters of a checkpoint's state dict that do not fit, described."""
        out = [
            f"{key}: {list(value.shape)} in the checkpoint, {list(self.shapes[key])} now"
            for key, value in state_dict.items()
            if key in self.shapes and tuple(value.shape) != self.shapes[key]
        ]
        if self.strict:
            out += [f"{key}: only in the checkpoint" for key in state_dict if key not in self.shapes]
            out += [f"{key}: not in the checkpoint" for key in self.shapes if key not in state_dict]
        return out

    def __call__(self, checkpoint: dict, path: str | Path) -> None:
        """Checks ``checkpoint`` (read from ``path``) before a resume.

        Raises:
            ResumeError: its weights do not fit the module (the message names the settings that differ),
                or they were trained on another tokenizer checkpoint's tokens (``_check_tokens``) or on
                the latents of another Flow-VAE run (``_check_latents``).
        """
        self._check_tokens(checkpoint.get("config") or {}, path)
        self._check_latents(checkpoint.get("config") or {}, path)
        changes = config_changes(checkpoint.get("config") or {}, self.config)
        misfits = self.misfits(checkpoint.get("state_dict", {}))
        if not misfits:
            if changes:
                log.info(
                    "resuming from %s with settings changed since it was written: %s", path, _listed(changes)
                )
            return
        model_changes = [c for c in changes if c.startswith("model.")]
        settings = (
            f"The model settings that differ from the checkpoint's: {_listed(model_changes)}"
            if model_changes
            else "No model.* setting differs (the shapes come from the data or an upstream checkpoint); the "
            f"settings that do: {_listed(changes) or 'none'}"
        )
        example = "; ".join(misfits[:MISFITS_SHOWN])
        raise ResumeError(
            f"cannot resume from {path}: this run's config builds a model its weights do not fit. {settings} "
            f"({len(misfits)} parameters do not fit, e.g. {example}). Put them back to resume this run; to "
            f"train the changed model, {TRAIN_ANEW}"
        )

    def _check_tokens(self, saved: dict, path: str | Path) -> None:
        """Refuses a run that would continue on the tokens of another tokenizer checkpoint.

        A token cache's folder is named by the hash of the checkpoint that wrote it, so another folder name
        means the tokenizer was retrained or continued since (a larger ``TOKENIZER_STEPS``). Its VQ codes
        then mean other things (codebooks move, dead codes restart), and weights trained on the old ids
        would go on learning from shuffled targets. Latents of a continued Flow-VAE are not refused: they
        drift slowly, and the long recipe continues flow matching on them on purpose (``_check_latents``
        refuses those of a new one). A cache moved to another ``paths.cache_dir`` keeps its folder name
        and resumes.

        Raises:
            ResumeError: the checkpoint was trained on another token cache (both are named).
        """
        if (changed := _changed_cache(saved, self.config, TOKEN_FEATURES)) is None:
            return
        before, now = changed
        raise ResumeError(
            f"cannot resume from {path}: it was trained on the tokens in {before}, and this run reads {now}, "
            "written by another tokenizer checkpoint (retrained or continued since), whose codes mean other "
            f"things. Train this stage anew on the new tokens: {TRAIN_ANEW}; or point upstream.tokenizer "
            "back at the checkpoint it was trained on"
        )

    def _check_latents(self, saved: dict, path: str | Path) -> None:
        """Refuses a run that would continue on the latents of another Flow-VAE run.

        A continued Flow-VAE (a larger ``VAE_STEPS``) writes a new latent cache whose latents drift a little
        from the old ones; flow matching may go on from them. One trained from scratch (another seed, other
        data) has a latent space of its own, and weights trained on the old one would start over from a
        worse place than nothing. The two are told apart by the lineage each cache's ``meta.json`` records
        (``scripts/encode.py``: ``run_lineage`` of the checkpoint it encoded with); a cache written before
        caches recorded one, or no longer on disk, is not checked.

        Raises:
            ResumeError: the two caches were written by checkpoints of different Flow-VAE runs.
        """
        if (changed := _changed_cache(saved, self.config, LATENT_FEATURES)) is None:
            return
        before, now = changed
        old, new = (_cache_lineage(Path(folder)) for folder in changed)
        if old is None or new is None or old == new:
            return
        raise ResumeError(
            f"cannot resume from {path}: it was trained on the latents in {before}, written by Flow-VAE run "
            f"{old}, and this run reads {now}, written by another Flow-VAE run, {new} (trained from scratch, "
            f"not continued): its latent space is another. Train this stage anew on the new latents: "
            f"{TRAIN_ANEW}; or point upstream.flow_vae back at a checkpoint of the run it was trained on"
        )


def _changed_cache(saved: dict, config: dict, key: str) -> tuple[str, str] | None:
    """``(the cache folder a checkpoint's config read, the one this run's reads)`` under the dotted
    ``key``, when both are set and their folder names differ (the same cache under another
    ``paths.cache_dir`` keeps its name); else None."""
    before, now = _flat(saved).get(key), _flat(config).get(key)
    if not before or not now or Path(str(before)).name == Path(str(now)).name:
        return None
    return str(before), str(now)


def _cache_lineage(folder: Path) -> str | None:
    """The lineage a feature cache's ``meta.json`` records for the checkpoint that wrote it, if any."""
    meta = folder / "meta.json"
    return json.loads(meta.read_text()).get("lineage") if meta.is_file() else None
