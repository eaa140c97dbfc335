"""Does an AR checkpoint read its text? Its zero-shot loss and text gain on training and validation batches.

    python scripts/ar_text_gain.py ckpt=logs/ar_tiny/checkpoints/last.ckpt [batches=40]

The text gain is the stage's ``val/text_gain`` (``ARModule.text_gain``): the loss with every row given
another row's text minus the loss with its own, in nats per token. On training batches it also counts what the
model memorized about those utterances; on validation batches (utterances it never saw) only what carries
over, provided their sentences are new too (``val_texts_in_train`` in the prepared corpus's summary.json is
0; otherwise recalling a sentence heard from another voice counts as reading). A model with a gain on
training batches and none on validation ones reads the text to recall the utterance, not to say it: it
needs more data rather than more steps (docs/main_job_levers.md).
"""

from __future__ import annotations

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from speech.checkpoints import checkpoint_config, load_checkpoint
from speech.lit.ar import ARModule
from speech.lit.resolvers import register_resolvers


def measure(module: ARModule, loader, batches: int) -> tuple[float, float, int]:
    """Mean zero-shot loss and text gain over the first ``batches`` batches of two rows or more."""
    losses, gains = [], []
    for batch in loader:
        if len(losses) == batches:
            break
        if len(batch["ids"]) < 2:
            continue
        speaker, out = module.zero_shot(batch)
        losses.append(float(out.loss))
        gains.append(float(module.text_gain(batch, speaker, out)))
    if not losses:
        raise ValueError("no batch of two rows or more: the text gain compares rows")
    return sum(losses) / len(losses), sum(gains) / len(gains), len(losses)


@hydra.main(config_path="../configs", config_name="entry/ar_text_gain", version_base="1.3")
@torch.no_grad()
def main(cfg: DictConfig) -> None:
    register_resolvers()
    ckpt = load_checkpoint(cfg.ckpt)
    run = checkpoint_config(ckpt)
    if run.stage.get("_target_") != "speech.lit.ar.ARModule":
        raise ValueError(f"{cfg.ckpt} is not an AR checkpoint (its stage is {run.stage.get('_target_')})")
    if cfg.prepared_dir is not None:
        run.data.datamodule.prepared_dir = cfg.prepared_dir
    datamodule = instantiate(run.data.datamodule)
    datamodule.setup("fit")
    module = instantiate(run.stage, model=instantiate(run.model), mel=instantiate(run.data.mel))
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    print(f"{cfg.ckpt} (step {ckpt.get('global_step')})\n")
    print("| batches | n | zero-shot loss (nats/token) | text gain (nats/token) |\n|---|---:|---:|---:|")
    loaders = {"training": datamodule.train_dataloader(), "validation": datamodule.val_dataloader()}
    for split, loader in loaders.items():
        loss, gain, n = measure(module, loader, cfg.batches)
        print(f"| {split} | {n} | {loss:.3f} | {gain:.4f} |")


if __name__ == "__main__":
    main()
