"""A small regressor trained with Lightning on the CPU: ``python ddp_toy.py <out> <devices> <batch size>``
runs it with Lightning's DDP over gloo when ``devices > 1`` (Lightning starts the other ranks by running this
script again), each rank writing its per-step losses and final weights to ``<out>/rank<r>.json``.
``fit_toy`` is the same run in the calling process (one device)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

STEPS = 6


class Regressor(L.LightningModule):
    """Step k of rank r of w trains on items ``[(k w + r) b, (k w + r + 1) b)`` of a fixed data set: the
    ranks' batches of a step together are the one-process batch of ``w b`` items."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))
        self.batch_size = batch_size
        self.losses: list[float] = []
        generator = torch.Generator().manual_seed(0)
        self.data = TensorDataset(
            torch.randn(64, 4, generator=generator), torch.randn(64, 2, generator=generator)
        )

    def train_dataloader(self) -> DataLoader:
        b, w, r = self.batch_size, self.trainer.world_size, self.trainer.global_rank
        items = [i for i in range(len(self.data)) if (i // b) % w == r]
        return DataLoader(Subset(self.data, items), batch_size=b)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)  # a mean over equal-size batches: DDP's average
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.05)


def fit_toy(out: Path, devices: int, batch_size: int) -> None:
    torch.manual_seed(0)
    module = Regressor(batch_size)
    strategy = L.pytorch.strategies.DDPStrategy(process_group_backend="gloo") if devices > 1 else "auto"
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy=strategy, max_steps=STEPS, logger=False,
        use_distributed_sampler=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module)
    weights = torch.cat([p.detach().flatten() for p in module.parameters()]).tolist()
    Path(out).mkdir(parents=True, exist_ok=True)
    report = {"losses": module.losses, "weights": weights, "world_size": trainer.world_size}
    (Path(out) / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    fit_toy(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
