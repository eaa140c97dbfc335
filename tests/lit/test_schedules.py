"""AdamWSchedule: the one place every stage's optimizer comes from, built as the modules built it before,
and set by one ``stage.optim`` node in every stage config."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from speech.audio.mel import LogMelSpectrogram
from speech.lit.flow_vae import FlowVAEModule
from speech.lit.schedules import AdamWSchedule, warmup_cosine
from speech.modules.discriminators import CombinedDiscriminator

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STAGES = sorted(p.stem for p in (CONFIGS / "stage").glob("*.yaml"))


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    torch.manual_seed(seed)
    return list(torch.nn.Linear(3, 2).parameters())


def _lrs(opt: torch.optim.Optimizer, sched, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_build_is_adamw_with_the_warmup_cosine_schedule_per_step():
    optim = AdamWSchedule(lr=2e-3, weight_decay=0.05, betas=[0.8, 0.99], warmup_steps=4, total_steps=20)
    assert optim.betas == (0.8, 0.99)  # a config's list, as AdamW wants it
    built = optim.build(_params())
    opt, sched = built["optimizer"], built["lr_scheduler"]["scheduler"]
    assert built["lr_scheduler"]["interval"] == "step" and isinstance(opt, torch.optim.AdamW)
    group = opt.param_groups[0]
    assert (group["initial_lr"], group["weight_decay"], group["betas"]) == (2e-3, 0.05, (0.8, 0.99))
    # the same numbers as AdamW + LambdaLR(warmup_cosine) written out by hand
    ref_opt = torch.optim.AdamW(_params(), lr=2e-3, weight_decay=0.05, betas=(0.8, 0.99))
    ref_sched = torch.optim.lr_scheduler.LambdaLR(ref_opt, lambda s: warmup_cosine(s, 4, 20))
    assert _lrs(opt, sched, 25) == _lrs(ref_opt, ref_sched, 25)
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-4)  # held at the floor after total_steps
    # the multiplier is a plain function, so a checkpoint's scheduler state holds no callable
    assert sched.state_dict()["lr_lambdas"] == [None]


def test_flow_vae_gets_two_optimizers_with_the_same_settings():
    optim = AdamWSchedule(lr=1e-3, weight_decay=0.0, betas=(0.8, 0.99), warmup_steps=5, total_steps=50)
    model, disc = torch.nn.Linear(3, 2), CombinedDiscriminator(periods=[2], fft_sizes=[])
    module = FlowVAEModule(model, LogMelSpectrogram(), disc, optim=optim)
    (opt_g, opt_d), (sched_g, sched_d) = module.configure_optimizers()
    assert opt_g.param_groups[0]["params"] == list(model.parameters())
    assert opt_d.param_groups[0]["params"] == list(disc.parameters())
    settings = [{k: v for k, v in o.param_groups[0].items() if k != "params"} for o in (opt_g, opt_d)]
    assert settings[0] == settings[1] and settings[0]["betas"] == (0.8, 0.99)
    assert _lrs(opt_g, sched_g, 8) == _lrs(opt_d, sched_d, 8)


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_config_has_one_optim_node(stage):
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("entry/train", overrides=[f"stage={stage}", "trainer.max_steps=1234"])
    assert not {"lr", "weight_decay", "betas", "warmup_steps", "total_steps"} & set(cfg.stage)
    optim = instantiate(cfg.stage.optim)
    assert isinstance(optim, AdamWSchedule) and optim.total_steps == 1234 and isinstance(optim.betas, tuple)


def test_an_experiment_overrides_one_setting_and_keeps_the_rest():
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("entry/train", overrides=["experiment=ar_tiny", "stage.optim.lr=3e-4"])
    optim = instantiate(cfg.stage.optim)
    assert (optim.lr, optim.warmup_steps, optim.weight_decay, optim.betas) == (3e-4, 100, 0.01, (0.9, 0.98))
