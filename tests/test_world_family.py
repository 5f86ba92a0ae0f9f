"""World families: draws, start-up checks naming the path, one action layout, per-episode worlds in the env."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest

from esper.leyline.family import Choice, Range, draw_world
from esper.world import WorldConfig
from esper.simic.env import EsperEnv

TINY = {
    "data": {"source": "synthetic", "limit": 300, "val_fraction": 0.2},
    "trainer": {"epochs": 3, "batch_size": 32, "max_batches_per_epoch": 2},
    "val_images": 60,
}


def test_ranges_and_choices_draw_within_their_bounds():
    rng = np.random.default_rng(0)
    log = Range(low=0.003, high=1.0, log=True)
    draws = [log.draw(rng) for _ in range(2000)]
    assert 0.003 <= min(draws) and max(draws) <= 1.0
    assert 0.3 < np.mean(np.log10(draws) < np.log10(0.003) / 2) < 0.7, "log-uniform: half below the log midpoint"
    assert {Range(low=2, high=5, integer=True).draw(rng) for _ in range(200)} == {2, 3, 4, 5}
    assert {str(Choice(choice=[[8, 16], "x"]).draw(rng)) for _ in range(50)} == {"[8, 16]", "x"}
    with pytest.raises(pydantic.ValidationError, match="low < high"):
        Range(low=1, high=1)
    with pytest.raises(pydantic.ValidationError, match="low > 0"):
        Range(low=0, high=1, log=True)


@pytest.mark.parametrize("vary,match", [
    ({"reward.rent_lamda": {"low": 0.01, "high": 1}}, r"vary.reward.rent_lamda = 0.01 does not make a valid world"),
    ({"trainer.epochs": {"choice": [4, 0]}}, r"vary.trainer.epochs = 0 does not make a valid world"),
    ({"kasmina.blueprints": {"choice": [["conv_light"]]}}, r"vary.kasmina.blueprints: 'kasmina' cannot vary"),
])
def test_a_family_that_can_draw_an_invalid_world_fails_at_start_up_naming_the_path(vary, match):
    with pytest.raises(pydantic.ValidationError, match=match):
        WorldConfig.model_validate(dict(TINY, vary=vary))


def test_draws_are_plain_worlds_reproducible_from_the_generator():
    family = WorldConfig.model_validate(dict(TINY, vary={
        "reward.rent_lambda": {"low": 0.003, "high": 1, "log": True}, "trainer.epochs": {"choice": [2, 3]}}))
    a, drawn = draw_world(family, np.random.default_rng(7))
    b, again = draw_world(family, np.random.default_rng(7))
    assert a == b and drawn == again and not a.vary
    assert (a.reward.rent_lambda, a.trainer.epochs) == (drawn["reward.rent_lambda"], drawn["trainer.epochs"])
    assert a.model_dump(exclude={"reward", "trainer", "vary"}) == family.model_dump(exclude={"reward", "trainer", "vary"})


def test_the_env_plays_a_drawn_world_per_episode_logs_it_and_shows_its_rent():
    from esper.leyline.features import feature_names

    family = dict(TINY, host={"preset": "custom", "widths": [8, 16, 32]}, vary={
        "reward.rent_lambda": {"choice": [0.01, 1.0]}, "trainer.epochs": {"choice": [2, 3]},
        "host.widths": {"choice": [[8, 16, 32], [12, 24, 48]]}})
    env = EsperEnv(WorldConfig.model_validate(family))
    rent_at = feature_names(env.action_spec).index("log10_rent")
    seen = {}
    for seed in range(8):
        obs, info = env.reset(seed=seed)
        drawn = info["world"]
        assert set(drawn) == {"reward.rent_lambda", "trainer.epochs", "host.widths"}
        assert obs["features"][rent_at] == pytest.approx(np.log10(drawn["reward.rent_lambda"]))
        assert env.run.model.slot("block3").point.channels == drawn["host.widths"][2]
        steps, done = 0, False
        while not done:
            obs, _, terminated, truncated, info = env.step(np.zeros(4, dtype=np.int64))
            steps, done = steps + 1, terminated or truncated
        assert steps == drawn["trainer.epochs"]
        seen[str(sorted(drawn.items()))] = True
    assert len(seen) > 2, "different episodes draw different worlds"
    _, first = env.reset(seed=3)
    _, again = env.reset(seed=3)
    assert first["world"] == again["world"], "an episode seed fixes its world"


def test_a_family_whose_worlds_differ_in_actions_is_refused_before_the_first_episode():
    family = dict(TINY, host={"preset": "custom", "widths": [8, 16, 32]},
                  vary={"host.widths": {"choice": [[8, 16, 32], [8, 16]]}})
    with pytest.raises(ValueError, match=r"vary.host.widths = \[8, 16\] changes the action layout"):
        EsperEnv(WorldConfig.model_validate(family))


def test_the_committed_family_and_its_held_out_worlds_are_valid_and_held_out():
    """The family preset builds; every held-out world is a valid plain world of it whose widths, data size or length
    are values the family never draws (no data is loaded here)."""
    from pathlib import Path

    import yaml

    from esper.leyline.experiment import load_config
    from esper.leyline.family import with_values
    from esper.simic.config import TrainTamiyoConfig

    root = Path(__file__).parents[1] / "experiments"
    family = load_config(root / "presets" / "family.yaml", model=TrainTamiyoConfig).world
    assert {"reward.rent_lambda", "host.widths", "data", "trainer.epochs"} <= set(family.vary)
    entries = yaml.safe_load((root / "worlds" / "heldout_family.yaml").read_text())["worlds"]
    trained = {p: [str(c) for c in family.vary[p].corners()] for p in ("host.widths", "trainer.epochs")}
    for e in entries:
        world = with_values(family, e["set"])
        assert not world.vary
        new = [str(e["set"][p]) not in trained[p] for p in trained] + [e["set"]["data"]["limit"] not in (1500, 2500)]
        assert any(new), f"{e['name']} is a training world"
