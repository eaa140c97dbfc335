"""Exponential moving average (EMA) of a LightningModule's weights, as a Lightning callback.

After every real optimizer step ``g`` (with gradient accumulation: once per accumulated update, not per
micro-batch), for ``g > start_step`` and ``(g - start_step) % every_n_steps == 0``::

    shadow <- decay * shadow + (1 - decay) * weights          # floating-point parameters, in float32
    shadow <- buffers                                          # buffers (and integer tensors) are copied

Up to ``start_step`` the shadow copies the weights. The shadow is saved in every checkpoint under
``checkpoint["ema_state_dict"]`` with the LightningModule's ``state_dict()`` keys (``model.…``), restored when
a run resumes (so the average continues), and read by ``speech.checkpoints.build_model`` by default.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from speech.checkpoints import EMA_KEY


class EMA(L.Callback):
    """Keeps float32 shadow weights of the whole LightningModule (every key of its ``state_dict``).

    Args:
        decay: EMA decay per update, in [0, 1).
        every_n_steps: Update every this many optimizer steps.
        start_step: Optimizer steps during which the shadow just copies the weights.
        validate_with_ema: Run validation with the EMA weights swapped in (swapped out after).

    Raises:
        ValueError: bad arguments; at setup, a sharded (FSDP) strategy, whose local parameters are shards.
    """

    def __init__(
        self,
        decay: float = 0.999,
        every_n_steps: int = 1,
        start_step: int = 0,
        validate_with_ema: bool = False,
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        if every_n_steps < 1 or start_step < 0:
            raise ValueError(
                f"EMA every_n_steps must be >= 1 and start_step >= 0, got {every_n_steps}, {start_step}"
            )
        self.decay, self.every_n_steps, self.start_step = decay, every_n_steps, start_step
        self.validate_with_ema = validate_with_ema
        self.shadow: dict[str, torch.Tensor] | None = None
        self.num_updates = 0
        self._last_step: int | None = None
        self._backup: dict[str, torch.Tensor] | None = None

    # ---- state ------------------------------------------------------------------------------------------
    @staticmethod
    def _is_averaged(value: torch.Tensor) -> bool:
        return isinstance(value, torch.nn.Parameter) and value.is_floating_point()

    @torch.no_grad()
    def _copy_weights(self, pl_module: L.LightningModule) -> None:
        self.shadow = {
            k: v.detach().float().clone() if v.is_floating_point() else v.detach().clone()
            for k, v in pl_module.state_dict(keep_vars=True).items()
        }

    @torch.no_grad()
    def update(self, pl_module: L.LightningModule) -> None:
        """One EMA update of the shadow from the module's current weights."""
        assert self.shadow is not None
        averaged, targets = [], []
        for k, v in pl_module.state_dict(keep_vars=True).items():
            if self._is_averaged(v):
                averaged.append(self.shadow[k])
                targets.append(v.detach().float())
            else:
                self.shadow[k].copy_(v.detach())
        if averaged:
            torch._foreach_lerp_(averaged, targets, 1.0 - self.decay)
        self.num_updates += 1

    def ema_state_dict(self) -> dict[str, torch.Tensor]:
        """The shadow weights on the CPU, keyed like the LightningModule's ``state_dict``."""
        if self.shadow is None:
            raise RuntimeError("the EMA has no weights yet: it starts with training")
        return {k: v.detach().cpu().clone() for k, v in self.shadow.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.num_updates = int(state_dict.get("num_updates", 0))

    # ---- hooks ------------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from lightning.pytorch.strategies import FSDPStrategy

        if isinstance(trainer.strategy, FSDPStrategy):
            raise ValueError(
                "the EMA callback does not support FSDP (its local parameters are shards): "
                "remove callbacks.ema or train with trainer=ddp"
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.shadow is None:
            self._copy_weights(pl_module)
        else:  # restored from a checkpoint on the CPU: move next to the weights
            current = pl_module.state_dict()
            missing = set(current) ^ set(self.shadow)
            if missing:
                raise ValueError(
                    f"the checkpoint's EMA weights do not match the module: keys {sorted(missing)}"
                )
            self.shadow = {k: v.to(current[k].device) for k, v in self.shadow.items()}
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == self._last_step:  # no optimizer step in this batch (gradient accumulation, skipped)
            return
        self._last_step = step
        if step <= self.start_step:
            self._copy_weights(pl_module)
        elif (step - self.start_step) % self.every_n_steps == 0:
            self.update(pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self.shadow is not None:
            checkpoint[EMA_KEY] = self.ema_state_dict()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if EMA_KEY in checkpoint:
            self.shadow = {k: v.clone() for k, v in checkpoint[EMA_KEY].items()}
        else:
            rank_zero_warn("the checkpoint has no EMA weights: the EMA restarts from the current weights")

    # ---- validation with the EMA weights ----------------------------------------------------------------
    @torch.no_grad()
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.validate_with_ema or self.shadow is None:
            return
        self._backup = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        pl_module.load_state_dict(self.shadow)

    @torch.no_grad()
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._backup is not None:
            pl_module.load_state_dict(self._backup)
            self._backup = None
