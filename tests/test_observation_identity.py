"""One observation path: for the same seed and the same decisions, a controller sees identical features and masks
in the RL env (what PPO trains on), in run_training (the comparison's arms, remote_training.py) and over HTTP
(what a served Tamiyo receives from RemoteTamiyo). The committed agent drives all three: its greedy decisions
are a function of what it sees, so any difference in an observation would also change every later step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from _serve_support import MAX_BODY, TOKEN, free_port, live_server

from esper.leyline import Op
from esper.leyline.features import encode
from esper.serve.api import InProcessBackend, build_api, guarded
from esper.serve.client import RemoteTamiyo, TamiyoClient
from esper.serve.policy import ServedPolicy
from esper.simic.config import TrainTamiyoConfig
from esper.simic.env import EsperEnv
from esper.tamiyo.agent_file import load_agent
from esper.tamiyo.neural import NeuralTamiyo
from esper.tolaria.builder import build_run
from esper.tolaria.run import run_training

AGENT = Path(__file__).parents[1] / "docs" / "data" / "agents" / "tamiyo_smoke_attempt7.pt"
EPOCHS = 5


def _world():
    """The agent's own world (its plane, so its features fit), on a few synthetic images."""
    world = load_agent(AGENT).provenance["config"]["world"]
    world.update(data={"source": "synthetic", "limit": 300, "val_fraction": 0.2}, val_images=60, device="cpu")
    world["trainer"].update(epochs=EPOCHS, max_batches_per_epoch=2)
    return TrainTamiyoConfig.model_validate({"world": world}).world


class Recording:
    """A controller wrapper that keeps the (features, mask) of every observation it is given."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.seen = inner, inner.name, []

    def decide(self, obs):
        self.seen.append((encode(obs.spec, obs.signals, obs.reports), obs.masks.flat()))
        return self.inner.decide(obs)


class BodyRecorder:
    """ASGI wrapper keeping the JSON body of every POST /v1/decide that reaches the server."""

    def __init__(self, app) -> None:
        self.app, self.bodies = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/decide":
            return await self.app(scope, receive, send)
        chunks = []

        async def recording_receive():
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                self.bodies.append(json.loads(b"".join(chunks)))
            return message

        await self.app(scope, recording_receive, send)


def _env_observations(world, agent, seed: int):
    env = EsperEnv(world)
    obs, info = env.reset(seed=seed)
    seen, ops, done = [], [], False
    controller = NeuralTamiyo(agent)
    while not done:
        seen.append((obs["features"], obs["action_mask"]))
        decision = controller.decide(env.observe())
        ops.append(decision.action.op)
        obs, _, terminated, truncated, _ = env.step(decision.action.as_array())
        done = terminated or truncated
    return env, info["episode_seed"], seen, ops


def _assert_same(a, b, where: str) -> None:
    assert len(a) == len(b) == EPOCHS, where
    for t, ((fa, ma), (fb, mb)) in enumerate(zip(a, b)):
        assert np.array_equal(np.asarray(fa, np.float32), np.asarray(fb, np.float32)), f"{where}: features differ at step {t}"
        assert np.array_equal(np.asarray(ma, np.float32), np.asarray(mb, np.float32)), f"{where}: mask differs at step {t}"


def _text_world_agent(tmp_path) -> tuple:
    """A character-transformer world on a tiny corpus, and an agent for its plane (a random sharpened net)."""
    from _serve_support import sharp_net

    from esper.leyline.features import feature_names
    from esper.world import WorldConfig
    from esper.tamiyo.agent_file import save_agent

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"{i % 5}: to be or not to be, that is the question.\n" for i in range(80)))
    world = WorldConfig.model_validate({
        "data": {"task": "char_lm", "source": str(corpus), "block_size": 16, "val_windows": 8},
        "host": {"name": "transformer", "preset": "custom", "n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16,
                 "vocab_size": 22},
        "kasmina": {"blueprints": ["block", "attention_head"], "blend": {"tempos": [3], "curves": ["linear"]},
                    "lifecycle": "graft"},
        "trainer": {"epochs": EPOCHS, "batch_size": 8, "max_batches_per_epoch": 2, "optimizer": "adamw", "lr": 3e-3,
                    "augment": False},
        "val_images": None, "device": "cpu"})
    spec = EsperEnv(world).action_spec
    path = tmp_path / "agent.pt"
    save_agent(path, sharp_net(spec, seed=1), spec, feature_names(spec), {"world": world.model_dump(mode="json")})
    return world, path


def test_env_run_training_and_http_observations_are_identical():
    _check_identity(_world(), AGENT)


def test_a_text_world_agent_is_served_and_decides_over_http_as_in_process(tmp_path):
    """The second domain through the same seams: a text world's agent served over HTTP decides, bit for bit, as
    it does in the env and in run_training."""
    world, agent = _text_world_agent(tmp_path)
    assert world.data.task == "char_lm"
    _check_identity(world, agent)


def _check_identity(world, agent_path) -> None:
    agent = load_agent(agent_path)
    env, episode_seed, env_seen, ops = _env_observations(world, agent, seed=11)
    assert Op.GERMINATE in ops, "the episode must grow something, or the check is too easy"
    cpu = torch.device("cpu")

    local = Recording(NeuralTamiyo(agent))
    run_training(build_run(world, env.task, seed=episode_seed, device=cpu, capacity_price=world.reward.rent_lambda), local)
    _assert_same(env_seen, local.seen, "run_training vs env")

    recorder = BodyRecorder(guarded(build_api(InProcessBackend(ServedPolicy(agent_path))), TOKEN, MAX_BODY))
    with live_server(recorder, free_port()) as url:
        remote = RemoteTamiyo(TamiyoClient(url, token=TOKEN, timeout_s=10.0, retries=0))
        result = run_training(build_run(world, env.task, seed=episode_seed, device=cpu,
                                        capacity_price=world.reward.rent_lambda), remote)
    assert remote.fallbacks == 0 and remote.answered == EPOCHS
    _assert_same(env_seen, [(b["features"], b["action_mask"]) for b in recorder.bodies], "HTTP vs env")
    assert [d.split()[1] for d in result.decisions] == [op.name for op in ops]
