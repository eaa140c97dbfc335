"""The tiny audio tokenizer run that the stage and fault tests train through train.py (a few seconds)."""

from pathlib import Path

TINY = [
    "model.dim=32",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "model.ctc_layers=0",
    "model.heads=2",
    "model.conv_channels=16",
    "model.quantizer.vq.codebook_size=64",  # the default quantizer (a VQ codebook updated by EMA), small
    "model.quantizer.vq.codebook_dim=8",
]


def tokenizer_command(prepared: Path, log_dir: Path, *overrides: str) -> list[str]:
    """Overrides of ``python train.py experiment=tokenizer_tiny`` on the test corpus, a checkpoint and a
    validation every 2 steps."""
    return [
        "experiment=tokenizer_tiny",
        f"data.prepared_dir={prepared}",
        f"paths.log_dir={log_dir}",
        "data.datamodule.num_workers=0",
        "data.datamodule.max_duration=4",
        *TINY,
        "trainer.val_check_interval=2",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        "callbacks.checkpoint.every_n_train_steps=2",
        *overrides,
    ]
