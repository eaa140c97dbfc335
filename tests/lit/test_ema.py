"""EMA weights: the closed form through a real Trainer (with gradient accumulation and a delayed start), the
average surviving a resume, and build_model reading them (or not)."""

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from speech.checkpoints import EMA_KEY, build_model
from speech.lit.callbacks import ConfigInCheckpoint
from speech.lit.ema import EMA

pytestmark = pytest.mark.usefixtures("one_thread")

LINEAR = {"_target_": "torch.nn.Linear", "in_features": 3, "out_features": 2}


class Toy(L.LightningModule):
    """A linear model under ``model.`` plus a buffer counting its training steps."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Linear(3, 2)
        self.register_buffer("steps_seen", torch.zeros(()))

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.steps_seen += 1
        return nn.functional.mse_loss(self.model(x), y)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.05)


def loader() -> DataLoader:
    """16 identical samples, so the weight trajectory does not depend on the data order."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1, 3, generator=g), torch.randn(1, 2, generator=g)
    return DataLoader(TensorDataset(x.repeat(16, 1), y.repeat(16, 1)), batch_size=2)


class WeightRecorder(L.Callback):
    """The module's weights at the start and after every optimizer step (keyed by global step)."""

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def _record(self, trainer, pl_module) -> None:
        self.weights[trainer.global_step] = {k: v.clone() for k, v in pl_module.model.state_dict().items()}

    def on_train_start(self, trainer, pl_module) -> None:
        self._record(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._record(trainer, pl_module)


def fit(module, callbacks, max_steps, tmp_path, ckpt_path=None, **trainer_kwargs) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu", max_steps=max_steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
        default_root_dir=tmp_path, **trainer_kwargs,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=loader(), ckpt_path=ckpt_path)
    return trainer


def closed_form(weights: dict[int, dict], key: str, decay: float, start: int, every: int, last: int):
    """``shadow = w_start``, then ``shadow = decay * shadow + (1 - decay) * w_g`` at each
    ``g = start + k * every``."""
    shadow = weights[start][key]
    for g in range(start + every, last + 1, every):
        shadow = decay * shadow + (1 - decay) * weights[g][key]
    return shadow


@pytest.mark.parametrize(("start", "every", "accumulate"), [(0, 1, 1), (2, 2, 1), (0, 1, 2)])
def test_ema_matches_the_closed_form(tmp_path, start, every, accumulate):
    torch.manual_seed(0)
    module, recorder, ema = Toy(), WeightRecorder(), EMA(decay=0.8, every_n_steps=every, start_step=start)
    fit(module, [recorder, ema], 6, tmp_path, accumulate_grad_batches=accumulate)
    assert sorted(recorder.weights) == list(range(7))  # one update per optimizer step, not per batch
    for key in ("weight", "bias"):
        expected = closed_form(recorder.weights, key, 0.8, start, every, 6)
        torch.testing.assert_close(ema.shadow[f"model.{key}"], expected)
        assert not torch.allclose(ema.shadow[f"model.{key}"], module.model.state_dict()[key])
    assert ema.num_updates == (6 - start) // every
    assert ema.shadow["steps_seen"] == module.steps_seen == 6 * accumulate  # buffers are copied


def test_ema_state_survives_a_resume_and_build_model_reads_it(tmp_path):
    torch.manual_seed(0)
    straight = EMA(decay=0.7)
    fit(Toy(), [straight], 6, tmp_path / "a")

    torch.manual_seed(0)
    config = {"model": LINEAR}
    first = fit(Toy(), [EMA(decay=0.7), ConfigInCheckpoint(config)], 3, tmp_path / "b")
    ckpt = tmp_path / "b" / "step3.ckpt"
    first.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=False)
    assert set(saved[EMA_KEY]) == set(saved["state_dict"])
    resumed = EMA(decay=0.7)
    fit(Toy(), [resumed, ConfigInCheckpoint(config)], 6, tmp_path / "b", ckpt_path=ckpt)
    assert resumed.num_updates == straight.num_updates == 6
    for key, value in straight.shadow.items():
        torch.testing.assert_close(resumed.shadow[key], value)

    # the step-3 checkpoint: EMA weights by default, the trained ones on request
    model, cfg = build_model(ckpt)
    assert cfg.model.out_features == 2 and not model.training
    torch.testing.assert_close(model.weight, saved[EMA_KEY]["model.weight"])
    raw, _ = build_model(ckpt, use_ema=False)
    torch.testing.assert_close(raw.weight, saved["state_dict"]["model.weight"])
    assert not torch.allclose(model.weight, raw.weight)


def test_build_model_without_ema_weights_loads_the_trained_ones(tmp_path):
    weights = nn.Linear(3, 2).state_dict()
    path = tmp_path / "plain.ckpt"
    torch.save(
        {"config": {"model": LINEAR}, "state_dict": {f"model.{k}": v for k, v in weights.items()}}, path
    )
    model, _ = build_model(path, use_ema=True)
    torch.testing.assert_close(model.bias, weights["bias"])


def test_validation_can_use_the_ema_weights(tmp_path):
    class Probe(Toy):
        seen: list[torch.Tensor] = []

        def validation_step(self, batch, batch_idx):
            self.seen.append(self.model.weight.detach().clone())

    torch.manual_seed(0)
    module, ema = Probe(), EMA(decay=0.5, validate_with_ema=True)
    trainer = L.Trainer(accelerator="cpu", max_steps=4, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[ema],
                        val_check_interval=4, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(module, train_dataloaders=loader(), val_dataloaders=loader())
    torch.testing.assert_close(Probe.seen[-1], ema.shadow["model.weight"])  # validated with the EMA
    assert not torch.allclose(module.model.weight, ema.shadow["model.weight"])  # swapped back after


def test_ema_rejects_bad_arguments():
    with pytest.raises(ValueError, match="decay must be in"):
        EMA(decay=1.0)
    with pytest.raises(ValueError, match="every_n_steps"):
        EMA(every_n_steps=0)
