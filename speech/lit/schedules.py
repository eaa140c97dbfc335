"""The optimizer settings every stage shares: AdamW with a per-step warm-up/cosine ``LambdaLR`` schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total_steps`` (held after)."""
    if step < warmup_steps:
        return (step + 1) / max(1, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class AdamWSchedule:
    """AdamW plus a per-step linear warm-up and cosine decay (``warmup_cosine``): a stage's ``optim``.

    The stage configs set it as ``stage.optim`` (``_target_: speech.lit.schedules.AdamWSchedule``), so an
    experiment changes one setting with e.g. ``stage.optim.lr=3e-4``.

    Args:
        lr: Peak learning rate, reached at the end of the warm-up.
        weight_decay: AdamW's decoupled weight decay.
        betas: AdamW's ``(beta1, beta2)``; a config's list is turned into a tuple.
        warmup_steps: Optimizer steps of the linear warm-up.
        total_steps: Step where the cosine reaches its floor (held after); the configs use
            ``${trainer.max_steps}``.
    """

    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 500
    total_steps: int = 10000

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))

    def optimizer(self, params: Iterable) -> torch.optim.AdamW:
        """AdamW over ``params`` with these settings."""
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay, betas=self.betas)

    def scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        """The warm-up/cosine multiplier of ``optimizer``'s learning rate, stepped per optimizer step."""
        warmup_steps, total_steps = self.warmup_steps, self.total_steps
        # a lambda, not a bound method or partial: LambdaLR leaves plain functions out of its state dict
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: warmup_cosine(s, warmup_steps, total_steps)
        )

    def build(self, params: Iterable) -> dict:
        """The optimizer and its per-step schedule, in the dict form ``configure_optimizers`` returns."""
        opt = self.optimizer(params)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self.scheduler(opt), "interval": "step"}}
