"""Every YAML preset in experiments/presets validates against its config model (a typo fails CI, not a run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from esper.leyline.experiment import ConfigError, ExperimentConfig, load_config
from esper.leyline.sweep import SweepConfig
from esper.leyline.world import TrainTamiyoConfig

PRESETS = sorted((Path(__file__).parent.parent / "experiments" / "presets").glob("*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_validates_and_documents_its_command(path):
    model = {"compare": ExperimentConfig, "sweep": SweepConfig}.get(path.stem.split("_")[0], TrainTamiyoConfig)
    config = load_config(path, model=model)
    if isinstance(config, SweepConfig):  # its base and every swept value must fit the training config too
        import sys

        sys.path.insert(0, str(path.parents[1]))
        from tune_rewards import _base, _check_search

        _check_search(config, _base(config))
    header = path.read_text().splitlines()[:4]
    assert any("python experiments/" in line for line in header if line.startswith("#")), "header must give the run command"


def test_presets_exist():
    assert {"smoke", "cifar10-cpu", "cifar10", "compare_quick"} <= {p.stem for p in PRESETS}


def test_bad_override_names_the_field():
    with pytest.raises(ConfigError, match=r"ppo\.itrations"):
        load_config(None, ["ppo.itrations=3"], model=TrainTamiyoConfig)
