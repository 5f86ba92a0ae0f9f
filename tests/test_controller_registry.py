"""A new controller is one registration: its name then works in comparisons, evaluations and recordings alike."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from _support import tiny_world
from esper.leyline import FactoredAction, Op
from esper.leyline.control import Decision
from esper.tamiyo.registry import CONTROLLERS, controller_factory, controller_names, names_help, register_controller


class FirstAllowed:
    """Germinates the first action the masks allow, else waits (a deterministic toy)."""

    name = "first-allowed"

    def decide(self, obs):
        spec = obs.spec
        for slot in range(len(spec.slots)):
            for bp in range(len(spec.blueprints)):
                action = FactoredAction(Op.GERMINATE, slot, bp, 0)
                if obs.masks.allows(action):
                    return Decision(action, "first allowed")
        return Decision(FactoredAction(Op.WAIT), "nothing allowed")


@pytest.fixture
def registered():
    register_controller("first-allowed", help="germinate the first allowed action")(lambda request: FirstAllowed)
    yield "first-allowed"
    del CONTROLLERS["first-allowed"]


def test_a_registered_controller_is_an_arm_an_evaluation_controller_and_a_recording_name(registered):
    from esper.simic.env import EsperEnv
    from esper.study.compare import CompareConfig
    from esper.study.episodes import play_set
    from esper.tolaria.builder import action_spec

    world = tiny_world()
    assert CompareConfig(world=world, arms=["wait", registered]).arms == ["wait", registered]
    assert controller_names([registered, "wait"], action_spec(world)) == [registered, "wait"]
    assert f"{registered}: germinate the first allowed action" in names_help()
    env = EsperEnv(world.model_copy(update={"trainer": world.trainer.model_copy(update={"epochs": 2})}))
    played = play_set(env, registered, [3, 4])  # 2 decisions each: a germination at each (2 dormant slots at least)
    assert [e.germinated for e in played] == [2, 2] and all(e.controller == registered for e in played)


def test_unknown_or_duplicate_names_fail_naming_them(registered):
    from esper.study.compare import CompareConfig

    with pytest.raises(ValidationError, match="unknown controller 'warp'"):
        CompareConfig(arms=["wait", "warp"])
    with pytest.raises(ValueError, match="already registered"):
        register_controller(registered, help="again")(lambda request: FirstAllowed)
    with pytest.raises(ValueError, match="needs an agent"):
        controller_factory("ppo")
    with pytest.raises(ValidationError, match="go together"):
        CompareConfig(arms=["wait", "ppo"])


def test_a_family_gets_its_argument_and_the_plane():
    seen = []

    @register_controller("probe:", help="N (records what it was asked)")
    def _probe(request):
        seen.append((request.name, request.argument, request.spec, request.seed))
        return FirstAllowed

    try:
        controller_factory("probe:7", spec="SPEC", seed=5)
    finally:
        del CONTROLLERS["probe:"]
    assert seen == [("probe:7", "7", "SPEC", 5)]
    assert np.all([name in CONTROLLERS for name in ("wait", "random", "heuristic", "ppo", "plan:", "eps:")])


def test_agent_family_plays_another_agent_file_greedily_and_refuses_other_planes(tmp_path):
    import torch

    from esper.leyline.features import feature_names, feature_size
    from esper.tamiyo.agent_file import save_agent
    from esper.tamiyo.neural import NeuralTamiyo
    from esper.tamiyo.policy import TamiyoPolicyNet
    from esper.tolaria.builder import action_spec

    spec = action_spec(tiny_world())
    torch.manual_seed(0)
    save_agent(tmp_path / "a.pt", TamiyoPolicyNet(feature_size(spec), spec.nvec, hidden=16), spec,
               feature_names(spec), config={})
    controller = controller_factory(f"agent:{tmp_path / 'a.pt'}", spec)()
    assert isinstance(controller, NeuralTamiyo) and not controller.sample
    with pytest.raises(ValueError, match="give the agent file"):
        controller_factory("agent:", spec)
    with pytest.raises(ValueError, match="not found"):
        controller_factory(f"agent:{tmp_path / 'missing.pt'}", spec)
    other = action_spec(tiny_world().model_copy(update={"kasmina": tiny_world().kasmina.model_copy(
        update={"blueprints": ["conv_light"]})}))
    with pytest.raises(ValueError, match="another action plane|observation features"):
        controller_factory(f"agent:{tmp_path / 'a.pt'}", other)
