"""Every config composes and the objects it describes can be built."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_method, instantiate

from speech.audio.mel import LogMelSpectrogram
from speech.data.manifest import CutRules

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DATA_CONFIGS = sorted(p.stem for p in (CONFIGS / "data").glob("*.yaml") if p.stem != "defaults")


def test_data_configs_exist():
    assert {"synthetic_tiny", "synthetic_full", "libritts", "emilia", "folder"} <= set(DATA_CONFIGS)


@pytest.mark.parametrize("data", DATA_CONFIGS)
def test_prepare_config_composes(data):
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("prepare", overrides=[f"data={data}"])
    assert cfg.data.name == data
    assert isinstance(instantiate(cfg.data.rules), CutRules)
    mel = instantiate(cfg.data.mel)
    assert isinstance(mel, LogMelSpectrogram) and mel.sample_rate == cfg.data.sample_rate
    assert callable(get_method(cfg.data.recipe._target_))
    assert cfg.data.datamodule.prepared_dir == cfg.data.prepared_dir
