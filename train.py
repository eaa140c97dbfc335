"""Train one stage: `python train.py experiment=<stage>_<size>` (configs/experiment/).

Running the same command again resumes from the run's last checkpoint (ckpt_path=last); a resume whose
config builds a model of other shapes is refused, naming the settings that differ (a longer budget is fine).
"""

from __future__ import annotations

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from speech.checkpoints import ResumeCheck
from speech.lit.callbacks import AtomicCheckpointIO, ConfigInCheckpoint
from speech.lit.resolvers import register_resolvers


def build(cfg: DictConfig) -> tuple[L.LightningModule, L.LightningDataModule, L.Trainer]:
    """Builds the stage's module (around its built model), the data and the trainer from a config."""
    register_resolvers()
    if cfg.get("model") is None or cfg.get("stage") is None:
        raise ValueError(
            "no stage chosen: run `python train.py experiment=<name>` with a file of configs/experiment/"
        )
    datamodule = instantiate(cfg.data.datamodule)
    module = instantiate(cfg.stage, model=instantiate(cfg.model), mel=instantiate(cfg.data.mel))
    config = OmegaConf.to_container(cfg, resolve=True)
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    callbacks.append(ConfigInCheckpoint(config))
    loggers = [instantiate(c) for c in cfg.loggers.values()]
    checkpoint_io = AtomicCheckpointIO(resume_check=ResumeCheck.of(module, config))  # refuses other shapes
    plugins = [instantiate(p) for p in cfg.trainer.get("plugins") or []] + [checkpoint_io]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, plugins=plugins)
    return module, datamodule, trainer


@hydra.main(config_path="configs", config_name="entry/train", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, float]:
    L.seed_everything(cfg.seed, workers=True)
    module, datamodule, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


if __name__ == "__main__":
    main()
