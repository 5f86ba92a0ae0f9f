"""agent.pt: save/load round trip, weights-only loading, NeuralTamiyo in a real episode, and every way a bad file
must fail with AgentFileError and a clear message."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _support import tiny_model

from esper.leyline import FactoredAction, Op
from esper.leyline.control import Decision, Observation
from esper.leyline.features import feature_names, feature_size
from esper.world import WorldConfig
from esper.simic.env import EsperEnv
from esper.study.episodes import run_episode
from esper.tamiyo.agent_file import AGENT_FORMAT, AGENT_FORMAT_VERSION, Agent, AgentFileError, load_agent, save_agent
from esper.tamiyo.neural import NeuralTamiyo
from esper.tamiyo.policy import TamiyoPolicyNet

TINY_WORLD = {
    "data": {"source": "synthetic", "limit": 300, "val_fraction": 0.2},
    "trainer": {"epochs": 5, "batch_size": 32, "max_batches_per_epoch": 2},
    "val_images": 60,
}


class NotATensor:
    """A custom class: a weights-only loader must refuse to unpickle it."""

    def __init__(self) -> None:
        self.payload = "anything"


@pytest.fixture(scope="module")
def env() -> EsperEnv:
    return EsperEnv(WorldConfig.model_validate(TINY_WORLD))


@pytest.fixture(scope="module")
def spec(env):
    return env.action_spec


def make_net(spec, hidden: int = 32, seed: int = 0) -> TamiyoPolicyNet:
    torch.manual_seed(seed)
    net = TamiyoPolicyNet(feature_size(spec), spec.nvec, hidden=hidden)
    with torch.no_grad():  # sharpen the heads so greedy actions depend on every weight, not on ties
        for head in (net.op_head, net.slot_head, net.blueprint_head, net.blend_head):
            head.weight.normal_(0.0, 1.0)
            head.bias.normal_(0.0, 1.0)
    return net


@pytest.fixture()
def saved(tmp_path, spec) -> tuple[Path, TamiyoPolicyNet]:
    net = make_net(spec)
    path = tmp_path / "agent.pt"
    save_agent(path, net, spec, feature_names(spec), config={"world": {"name": "test"}}, code_version="abc123",
               extra={"iterations": 3})
    return path, net


def random_legal_inputs(spec, n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random features with masks of plane states reached by a random legal walk on a tiny model."""
    rng = np.random.default_rng(seed)
    model = tiny_model()
    assert model.action_spec == spec
    masks = []
    for _ in range(60):
        m = model.masks()
        masks.append(m.flat())
        op = int(rng.choice(np.flatnonzero(m.op)))
        slot = int(rng.choice(np.flatnonzero(m.slot[op])))
        _, bp, blend = m.head_masks(op, slot)
        model.apply(FactoredAction(Op(op), slot, int(rng.choice(np.flatnonzero(bp))), int(rng.choice(np.flatnonzero(blend)))))
        model.step_epoch()
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(n, feature_size(spec), generator=gen).clamp(-5, 5)
    mask = torch.as_tensor(np.stack(masks))[torch.randint(0, len(masks), (n,), generator=gen)]
    return features, mask


def rewrite(path: Path, mutate) -> None:
    """Load a valid agent.pt as plain containers, mutate it, save it back."""
    payload = torch.load(path, weights_only=True)
    mutate(payload)
    torch.save(payload, path)


# ---------------------------------------------------------------------------------------------- round trip


def test_round_trip_gives_identical_greedy_actions(saved, spec):
    path, net = saved
    agent = load_agent(path, expected_features=feature_names(spec))
    assert isinstance(agent, Agent)
    assert agent.spec == spec
    assert agent.feature_names == feature_names(spec)
    assert not agent.net.training
    features, mask = random_legal_inputs(spec)
    with torch.no_grad():
        before = net(features, mask, mode="greedy")
        after = agent.net(features, mask, mode="greedy")
    assert torch.equal(before.actions, after.actions)
    torch.testing.assert_close(before.logp, after.logp, rtol=0, atol=0)
    assert len(set(map(tuple, before.actions.tolist()))) > 3  # the comparison is not between constant outputs
    for k, v in net.state_dict().items():
        assert torch.equal(v, agent.net.state_dict()[k]), k


def test_file_is_plain_weights_only_containers(saved, spec):
    path, net = saved
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"manifest", "provenance", "state_dict"}
    m = payload["manifest"]
    assert m["format"] == AGENT_FORMAT and m["format_version"] == AGENT_FORMAT_VERSION
    assert m["n_features"] == feature_size(spec) and m["nvec"] == list(spec.nvec)
    assert m["network"]["hidden"] == net.hidden
    assert payload["provenance"]["code_version"] == "abc123" and payload["provenance"]["iterations"] == 3
    assert "torch" in payload["provenance"]["versions"]
    assert all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # atomic save left nothing behind


def test_save_refuses_a_mismatched_layout(tmp_path, spec):
    net = make_net(spec)
    with pytest.raises(ValueError, match="do not match"):
        save_agent(tmp_path / "a.pt", net, spec, feature_names(spec)[:-1], config={})
    assert not (tmp_path / "a.pt").exists()


# ---------------------------------------------------------------------------------------------- NeuralTamiyo


class CheckedController:
    """Wraps a controller and asserts every decision is one the masks allow."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.decisions = inner, inner.name, []

    def decide(self, obs: Observation) -> Decision:
        d = self.inner.decide(obs)
        assert obs.masks.allows(d.action), f"illegal decision {d}"
        assert "masked" not in d.reason, d.reason  # the policy itself proposed a legal action
        self.decisions.append(d)
        return d


@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampled"])
def test_neural_tamiyo_plays_legal_episodes(saved, env, sample):
    path, _ = saved
    agent = load_agent(path, expected_features=feature_names(env.action_spec))
    controller = CheckedController(NeuralTamiyo(agent, sample=sample, seed=3))
    stats = run_episode(env, controller, seed=7)
    assert len(controller.decisions) == env.world.trainer.epochs or stats.rolled_back
    assert env.counts["invalid"] == 0
    assert sum(stats.ops.values()) == len(controller.decisions)


def test_neural_tamiyo_greedy_is_reproducible(saved, env):
    path, _ = saved
    agent = load_agent(path)
    runs = []
    for _ in range(2):
        c = CheckedController(NeuralTamiyo(agent))
        run_episode(env, c, seed=1)
        runs.append([d.action for d in c.decisions])
    assert runs[0] == runs[1]


# ---------------------------------------------------------------------------------------------- bad files


def expect_error(path: Path, *fragments: str, **kwargs) -> AgentFileError:
    with pytest.raises(AgentFileError) as err:
        load_agent(path, **kwargs)
    msg = str(err.value)
    assert str(path) in msg, msg  # the message names the file
    for f in fragments:
        assert f in msg, msg
    assert "\n" not in msg, msg  # one line, whatever torch said
    return err.value


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.pt", "not found")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.02])
def test_truncated_file(saved, keep):
    path, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    expect_error(path, "not an agent.pt")


@pytest.mark.parametrize("size", [0, 16, 4096])
def test_random_bytes(tmp_path, size):
    path = tmp_path / "agent.pt"
    path.write_bytes(np.random.default_rng(size).bytes(size))
    expect_error(path, "not an agent.pt")


def test_pickled_arbitrary_object_is_refused(tmp_path, saved):
    good, _ = saved
    payload = torch.load(good, weights_only=True)
    payload["provenance"]["evil"] = NotATensor()
    path = tmp_path / "pickled.pt"
    torch.save(payload, path)
    expect_error(path, "not an agent.pt")


def test_pickled_object_at_the_top_level_is_refused(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"manifest": NotATensor()}, path)
    expect_error(path, "not an agent.pt")


@pytest.mark.parametrize("payload", [[torch.zeros(2)], {"state_dict": {}}, {"manifest": "esper.agent"}, torch.ones(3)])
def test_not_an_agent_payload(tmp_path, payload):
    path = tmp_path / "other.pt"
    torch.save(payload, path)
    expect_error(path, "not an Esper agent")


def test_other_format_string(saved):
    path, _ = saved
    rewrite(path, lambda p: p["manifest"].__setitem__("format", "esper.grown_model/1"))
    expect_error(path, "not an Esper agent", AGENT_FORMAT)


def test_grown_model_file_is_not_an_agent(tmp_path):
    path = tmp_path / "grown.pt"
    tiny_model().save(path)
    expect_error(path, "not an Esper agent")


@pytest.mark.parametrize("version", [AGENT_FORMAT_VERSION + 1, 0, None, "1"])
def test_wrong_format_version(saved, version):
    path, _ = saved
    rewrite(path, lambda p: p["manifest"].__setitem__("format_version", version))
    expect_error(path, "format version", str(AGENT_FORMAT_VERSION))


def test_mismatched_expected_features(saved, spec):
    path, _ = saved
    names = feature_names(spec)
    other = names[:-1] + ["block3/blueprint_mystery"]
    err = expect_error(path, "observation features differ", expected_features=other)
    assert "blueprint_mystery" in str(err)
    expect_error(path, "observation features differ", expected_features=names + ["extra_feature"])
    expect_error(path, "observation features differ", expected_features=names[:-1])


def test_reordered_expected_features_are_named_in_the_message(saved, spec):
    """Same names, different order (e.g. slots reordered): still a mismatch, and the message must say where —
    a set difference is empty here, so it must not print "e.g. []"."""
    path, _ = saved
    names = feature_names(spec)
    swapped = [names[1], names[0], *names[2:]]
    err = expect_error(path, "observation features differ", expected_features=swapped)
    assert "[]" not in str(err), f"message does not say what differs: {err}"
    assert names[0] in str(err) or names[1] in str(err), str(err)


@pytest.mark.parametrize("kind", ["wrong_shape", "missing_key", "extra_key", "hidden_mismatch"])
def test_mismatched_weights(saved, kind):
    path, _ = saved

    def mutate(p):
        sd = p["state_dict"]
        if kind == "wrong_shape":
            sd["op_head.weight"] = torch.zeros(sd["op_head.weight"].shape[0], sd["op_head.weight"].shape[1] + 1)
        elif kind == "missing_key":
            del sd["value_net.2.bias"]
        elif kind == "extra_key":
            sd["bonus_head.weight"] = torch.zeros(3, 3)
        else:
            p["manifest"]["network"]["hidden"] = 64

    rewrite(path, mutate)
    expect_error(path, "weights do not match")


def test_manifest_disagreeing_with_itself(saved):
    path, _ = saved

    def mutate(p):
        p["manifest"]["nvec"] = [4, 3, 6, 10]  # the action spec still says 9 blend choices

    rewrite(path, mutate)
    expect_error(path, "disagrees with manifest nvec")


@pytest.mark.parametrize("field", ["action_spec", "feature_names", "network"])
def test_manifest_missing_a_field(saved, spec, field):
    """A hand-edited or partial manifest is a corrupt agent file: AgentFileError naming the field, not a bare
    KeyError (experiments/evaluate_tamiyo.py only catches AgentFileError)."""
    path, _ = saved
    rewrite(path, lambda p: p["manifest"].pop(field))
    expect_error(path, field, expected_features=feature_names(spec))


@pytest.mark.parametrize("bad", ["curve", "allowed_shape"])
def test_manifest_with_a_malformed_action_spec(saved, bad):
    path, _ = saved

    def mutate(p):
        a = p["manifest"]["action_spec"]
        if bad == "curve":
            a["curves"] = ["linear", "wobbly", "sigmoid"]
        else:
            a["blueprint_allowed"] = a["blueprint_allowed"][:-1]

    rewrite(path, mutate)
    expect_error(path, "action spec")


def test_state_dict_of_the_wrong_type(saved):
    path, _ = saved
    rewrite(path, lambda p: p.__setitem__("state_dict", [torch.zeros(1)]))
    expect_error(path, "weights do not match")


def test_errors_are_value_errors(tmp_path):
    """Callers that catch ValueError (config-style errors) also catch AgentFileError."""
    path = tmp_path / "x.pt"
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError):
        load_agent(path)
    assert os.path.exists(path)


# ---------------------------------------------------------------------------------------------- format migration
COMMITTED_AGENT = Path(__file__).parents[1] / "docs" / "data" / "agents" / "tamiyo_smoke_attempt7.pt"


def test_committed_version_1_agent_loads_with_its_metric_features_renamed():
    """Version 1 named the metric features after accuracy; they load under the metric names, same order."""
    from esper.simic.config import TrainTamiyoConfig
    from esper.tolaria.builder import action_spec

    raw = torch.load(COMMITTED_AGENT, weights_only=True)["manifest"]
    assert raw["format_version"] == 1 and "val_accuracy" in raw["feature_names"]
    agent = load_agent(COMMITTED_AGENT)
    world = TrainTamiyoConfig.model_validate(agent.provenance["config"]).world  # its old config (ppo.gamma) loads too
    assert agent.feature_names == feature_names(action_spec(world))
    assert [n for n in agent.feature_names if "metric" in n] == ["val_metric", "delta_metric_1", "delta_metric_2",
                                                                 "delta_metric_3"]
    assert set(_added_since(1)) <= set(agent.feature_names), "and blind to the features added since"


def _as_version(payload: dict, version: int) -> None:
    """Rewrite a current agent.pt payload as an older version wrote it: without the features added since,
    with the accuracy names (v = 1)."""
    from esper.tamiyo.agent_file import INPUT_LAYERS, V1_FEATURE_RENAMES

    m, names = payload["manifest"], payload["manifest"]["feature_names"]
    keep = [i for i, n in enumerate(names) if n not in _added_since(version)]
    for key in INPUT_LAYERS:
        payload["state_dict"][key] = payload["state_dict"][key][:, keep]  # (H, F) → (H, F − 2)
    old_names = {v: k for k, v in V1_FEATURE_RENAMES.items()} if version == 1 else {}
    m["feature_names"] = [old_names.get(names[i], names[i]) for i in keep]
    m["n_features"], m["format_version"] = len(keep), version


def _added_since(version: int) -> list[str]:
    from esper.tamiyo.agent_file import FEATURES_ADDED

    return [n for v, (_, new) in FEATURES_ADDED.items() if v > version for n in new]


@pytest.mark.parametrize("version", [1, 2, 3])
def test_older_agents_load_blind_to_later_features_and_decide_as_before(saved, spec, version):
    """An older agent never saw the features added since: it loads with zero weights on them, so whatever they
    say it decides exactly as the network it was (here: the saved network with those inputs' weights zeroed)."""
    from esper.tamiyo.agent_file import INPUT_LAYERS

    path, net = saved
    rewrite(path, lambda p: _as_version(p, version))
    agent = load_agent(path, expected_features=feature_names(spec))
    assert agent.feature_names == feature_names(spec)
    blind = [feature_names(spec).index(n) for n in _added_since(version)]
    assert blind
    with torch.no_grad():
        for key in INPUT_LAYERS:
            net.get_parameter(key)[:, blind] = 0.0
    features, mask = random_legal_inputs(spec)
    with torch.no_grad():
        before, after = net(features, mask, mode="greedy"), agent.net(features, mask, mode="greedy")
        features[:, blind] = 0.0
        unseen = agent.net(features, mask, mode="greedy")
    assert torch.equal(before.actions, after.actions) and torch.equal(after.actions, unseen.actions)
    torch.testing.assert_close(before.logp, after.logp, rtol=0, atol=0)
    assert len(set(map(tuple, before.actions.tolist()))) > 3
