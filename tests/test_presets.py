"""Every YAML preset in experiments/presets validates against its config model (a typo fails CI, not a run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from esper.leyline.experiment import ConfigError, load_config
from esper.simic.config import TrainTamiyoConfig
from esper.simic.tune.config import SweepConfig

from esper.study.cli import WorldPreset
from esper.study.compare import CompareConfig

EXPERIMENTS = Path(__file__).parent.parent / "experiments"
PRESETS = sorted((EXPERIMENTS / "presets").glob("*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_validates_and_documents_its_command(path):
    by_stem = {"emrakul_planted": WorldPreset}  # the other emrakul_* presets are comparisons
    model = by_stem.get(path.stem) or {"compare": CompareConfig, "emrakul": CompareConfig, "sweep": SweepConfig,
                                       "demo": WorldPreset, "governor": WorldPreset,
                                       }.get(path.stem.split("_")[0], TrainTamiyoConfig)
    config = load_config(path, [], model=model)
    if isinstance(config, SweepConfig):  # its base and every swept value must fit the training config too
        from esper.simic.tune.tuner import check_search, sweep_base

        check_search(config, sweep_base(config))
    header = path.read_text().splitlines()[:4]
    assert any("python experiments/" in line for line in header if line.startswith("#")), "header must give the run command"


def test_presets_exist():
    assert {"smoke", "cifar10-cpu", "cifar10", "compare_quick"} <= {p.stem for p in PRESETS}


def test_bad_override_names_the_field():
    with pytest.raises(ConfigError, match=r"ppo\.itrations"):
        load_config(None, ["ppo.itrations=3"], model=TrainTamiyoConfig)


def test_one_discount_for_ppo_and_the_shaping():
    """PPO discounts with world.reward.gamma (PBRS is policy-invariant only under the learner's own γ); a config
    from before, with its own ppo.gamma, loads when the two agree and fails naming both when they differ."""
    assert "gamma" not in load_config(None, [], model=TrainTamiyoConfig).ppo.model_dump()
    old = load_config(None, ["ppo.gamma=0.9"], model=TrainTamiyoConfig)
    assert old.world.reward.gamma == 0.9
    assert load_config(None, ["ppo.gamma=0.9", "world.reward.gamma=0.9"], model=TrainTamiyoConfig).world.reward.gamma == 0.9
    with pytest.raises(ConfigError, match=r"ppo\.gamma .*world\.reward\.gamma"):
        load_config(None, ["ppo.gamma=0.9", "world.reward.gamma=0.99"], model=TrainTamiyoConfig)


def test_a_budget_in_host_epochs_is_one_field_and_leaves_the_static_host_its_decisions():
    from pydantic import ValidationError

    from esper.tolaria.trainer import TrainerConfig

    cfg = CompareConfig.model_validate({"world": {"trainer": {"epochs": 10, "budget_host_epochs": 15}}})
    assert cfg.world.trainer.epochs == 16, "the static host needs 15 decisions and one that ends its budget"
    with pytest.raises(ValidationError, match="budget_flops and trainer.budget_host_epochs"):
        TrainerConfig(budget_flops=1e12, budget_host_epochs=3)
