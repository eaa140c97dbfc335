"""The Flow-VAE stage: it learns, trains through train.py with both optimizers, resumes, a checkpoint
alone rebuilds the model, the latent encoder fills its cache once, and scripts/resynthesize.py runs it."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from script_runs import run_script

from speech.audio.mel import LogMelSpectrogram
from speech.checkpoints import build_model, run_lineage
from speech.data.cache import FeatureCache
from speech.lit.datamodule import SpeechDataModule
from speech.lit.flow_vae import FlowVAEModule
from speech.models.flow_vae import FlowVAE
from speech.modules.coupling import CouplingFlow
from speech.modules.dac import DACDecoder, DACEncoder
from speech.modules.discriminators import CombinedDiscriminator

ROOT = Path(__file__).resolve().parents[2]
TRAIN, ENCODE = ROOT / "train.py", ROOT / "scripts" / "encode.py"
RESYNTHESIZE = ROOT / "scripts" / "resynthesize.py"
TINY = [
    "model.encoder.channels=2", "model.decoder.channels=16", "model.flow.hidden=4", "model.flow.n_flows=1",
    "stage.discriminator.periods=[2]", "stage.discriminator.period_channels=[4]",
    "stage.discriminator.fft_sizes=[512]", "stage.discriminator.stft_channels=4",
    "stage.discriminator.stft_layers=1", "stage.segment_seconds=0.4", "stage.mel_windows=[512]",
    "stage.mel_bins=[40]", "stage.stft_sizes=[512]",
]  # fmt: skip


def test_overfits_one_batch(shared_prepared):
    torch.manual_seed(0)
    dm = SpeechDataModule(shared_prepared, max_duration=1.5, num_workers=0, references=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    strides = [4, 5, 16]
    model = FlowVAE(DACEncoder(2, strides, 16), DACDecoder(8, 16, strides[::-1]), CouplingFlow(8, 1, 8))
    disc = CombinedDiscriminator(periods=[2], fft_sizes=[])
    module = FlowVAEModule(model, LogMelSpectrogram(), disc, segment_seconds=None, mel_windows=[512],
                           mel_bins=[40], stft_sizes=[512])  # fmt: skip
    audio, lens = batch["audio"][:, :3200], batch["audio_lens"].clamp(max=3200)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(20):
        out = model(audio, lens)
        rec = module.reconstruction_losses(module._reference(audio, out), out)
        loss = 15 * rec["mel"] + rec["stft"] + 0.01 * rec["kl"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(rec["mel"].item())
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


def test_train_py_step_resume_rebuild_and_encode(shared_prepared, tmp_path, capsys):
    common = [
        "experiment=flow_vae_tiny", f"data.prepared_dir={shared_prepared}", f"paths.log_dir={tmp_path}",
        "data.datamodule.num_workers=0", "data.datamodule.max_duration=1.5", "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
        "callbacks.checkpoint.every_n_train_steps=2", "stage.disc_start_step=1", *TINY,
    ]  # fmt: skip
    run_script(TRAIN, *common, "trainer.max_steps=2")
    last = tmp_path / "flow_vae_tiny" / "checkpoints" / "last.ckpt"
    first = torch.load(last, weights_only=False)
    assert first["global_step"] == 2 and first["config"]["model"]["decoder"]["channels"] == 16
    metrics = (tmp_path / "flow_vae_tiny" / "csv" / "version_0" / "metrics.csv").read_text()
    assert all(k in metrics for k in ("train/mel", "train/kl", "train/disc", "val/mel_distance", "val/kl"))
    run_script(TRAIN, *common, "trainer.max_steps=3")  # same command, longer: resumes
    second = torch.load(last, weights_only=False)
    assert second["global_step"] == 3  # generator updates, not generator + discriminator updates
    g_steps, d_steps = ({int(s["step"]) for s in o["state"].values()} for o in second["optimizer_states"])
    assert g_steps == {3} and d_steps == {2}  # discriminator from step 1: fresh optimizers would say 1
    lineage = run_lineage(second)  # drawn at the first launch, kept by the resume
    assert re.fullmatch("[0-9a-f]{32}", lineage) and run_lineage(first) == lineage
    model, cfg = build_model(last)
    assert isinstance(model, FlowVAE) and model.flow is not None and not model.training
    assert cfg.name == "flow_vae_tiny"

    encode = [f"ckpt={last}", "kind=latents", f"data.prepared_dir={shared_prepared}",
              f"out={tmp_path / 'cache'}", "progress=false", "batch_max_duration=5"]  # fmt: skip
    run_script(ENCODE, *encode)
    cache = FeatureCache.for_checkpoint(tmp_path / "cache", "latents", last)
    assert cache.meta["lineage"] == lineage  # recorded for flow matching's resume check
    files = sorted(cache.root.glob("*/*.npy"))
    assert len(files) == 24  # 21 train + 3 val cuts
    latents = cache.load("s0_0")  # 0.6 s at hop 320: 30 frames
    assert latents.shape == (30, model.latent_dim) and latents.dtype == "float32"
    mtimes = [f.stat().st_mtime_ns for f in files]
    run_script(ENCODE, *encode)  # a second run adds nothing
    assert "0 encoded now, 24 cached before" in capsys.readouterr().out
    assert [f.stat().st_mtime_ns for f in sorted(cache.root.glob("*/*.npy"))] == mtimes

    wavs, out = tmp_path / "wavs", tmp_path / "resynth"
    wavs.mkdir()
    for src in sorted((shared_prepared.parent / "wav").glob("*.wav"))[:2]:
        shutil.copy(src, wavs / src.name)
    run_script(RESYNTHESIZE, f"ckpt={last}", f"in_dir={wavs}", f"out_dir={out}", "progress=false")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in wavs.iterdir())  # wavs only
    for src in wavs.iterdir():
        assert sf.info(out / src.name).frames == sf.info(src).frames  # the input's length, at 16 kHz
    run_script(RESYNTHESIZE, f"ckpt={last}", f"in_dir={wavs}", f"out_dir={out}", "progress=false")
    assert f"0 resynthesized into {out} (2 there before)" in capsys.readouterr().out

    # the quantization floor: k-means codebooks fitted on the latent cache, applied before decoding
    floor = tmp_path / "floor"
    run_script(RESYNTHESIZE, f"ckpt={last}", f"in_dir={wavs}", f"out_dir={floor}", "progress=false",
               "codebooks=[4,4]", f"fit_on={cache.root}")  # fmt: skip
    assert "fitting codebooks [4, 4] on" in capsys.readouterr().out
    for src in wavs.iterdir():
        quantized, plain = sf.read(floor / src.name)[0], sf.read(out / src.name)[0]
        assert len(quantized) == len(plain) and not np.allclose(quantized, plain)
    with pytest.raises(SystemExit):
        run_script(RESYNTHESIZE, f"ckpt={last}", f"in_dir={wavs}", f"out_dir={floor}2", "codebooks=[4]")
    assert "codebooks need fit_on=" in capsys.readouterr().err


def test_encode_refuses_an_unknown_kind(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_script(ENCODE, f"ckpt={tmp_path / 'x.ckpt'}", "kind=mels", f"paths.log_dir={tmp_path}")
    assert (
        "unknown kind='mels': scripts/encode.py writes kind=tokens | kind=latents" in capsys.readouterr().err
    )


def test_unknown_adversarial_loss_is_refused():
    model = FlowVAE(DACEncoder(2, [4], 4), DACDecoder(2, 8, [4]))
    with pytest.raises(ValueError, match="unknown adversarial loss 'wgan'"):
        FlowVAEModule(model, LogMelSpectrogram(), CombinedDiscriminator(periods=[2], fft_sizes=[]),
                      adv_loss="wgan")  # fmt: skip


def test_flow_joins_the_kl_at_flow_start_step():
    torch.manual_seed(0)
    strides = [4, 5, 16]
    model = FlowVAE(DACEncoder(2, strides, 16), DACDecoder(8, 16, strides[::-1]), CouplingFlow(8, 1, 8))
    with torch.no_grad():  # a flow that is not the identity, so the two KLs differ
        for p in model.flow.parameters():
            p.normal_(0, 0.1)
    disc = CombinedDiscriminator(periods=[2], fft_sizes=[])
    module = FlowVAEModule(model, LogMelSpectrogram(), disc, segment_seconds=None, mel_windows=[512],
                           mel_bins=[40], stft_sizes=[512], flow_start_step=10)  # fmt: skip
    audio, lens = torch.randn(2, 3200), torch.tensor([3200, 2880])
    out = model(audio, lens)
    assert not torch.isclose(out.kl, out.kl_standard)
    before = module.reconstruction_losses(audio[:, : out.audio.shape[1]], out)["kl"]
    assert torch.equal(before, out.kl_standard)  # global_step 0 < 10: the plain VAE's KL
    module.flow_start_step = 0
    after = module.reconstruction_losses(audio[:, : out.audio.shape[1]], out)["kl"]
    assert torch.equal(after, out.kl)
