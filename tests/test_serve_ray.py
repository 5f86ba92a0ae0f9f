"""The served Tamiyo on a real (test-session) Ray cluster: HTTP answers equal the in-process policy, hot reload
under traffic drops nothing, a replica failing its health check is replaced, and a remote training job equals the
in-process run and survives the server being stopped and restarted mid-run; a text-world agent is served and
steers a character-transformer job exactly as in-process. Loopback only; Serve is stopped by
its own handle at the end."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

from esper.leyline.features import feature_names, feature_size
from esper.world import WorldConfig
from esper.serve.client import RemoteTamiyo, TamiyoClient
from esper.serve.config import ServeConfig
from esper.serve.policy import file_digest
from esper.serve.remote_job import train  # what experiments/remote_training.py runs
from esper.tamiyo.agent_file import load_agent, save_agent
from esper.tamiyo.neural import NeuralTamiyo
from esper.tamiyo.policy import TamiyoPolicyNet


WORLD = WorldConfig.model_validate({
    "data": {"source": "synthetic", "limit": 300, "val_fraction": 0.2},
    "trainer": {"epochs": 6, "batch_size": 32, "max_batches_per_epoch": 2},
    "val_images": 60, "device": "cpu",
})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_agent(path: Path, seed: int, world: WorldConfig = WORLD) -> Path:
    from esper.tolaria.builder import action_spec

    spec = action_spec(world)
    torch.manual_seed(seed)
    net = TamiyoPolicyNet(feature_size(spec), spec.nvec, hidden=32)
    with torch.no_grad():  # sharp heads: greedy choices vary with the input and are never near-ties
        for head in (net.op_head, net.slot_head, net.blueprint_head, net.blend_head):
            head.weight.normal_(0.0, 1.0)
    save_agent(path, net, spec, feature_names(spec), config={"world": world.model_dump(mode="json")}, code_version="test")
    return path


@pytest.fixture(scope="module")
def served(ray_session, tmp_path_factory):
    from esper.serve import launch

    d = tmp_path_factory.mktemp("serve")
    # The session cluster runs Serve's Python proxy; tests/test_serve_haproxy.py covers the HAProxy front end.
    cfg = ServeConfig(agent=make_agent(d / "a.pt", 1), port=free_port(), ingress="proxy", batch_wait_timeout_s=0.001)
    url = launch.start(cfg)
    yield cfg, url, d
    launch.stop()


def observations(n: int, seed: int = 0) -> list[tuple[list[float], list[float]]]:
    """Observations from real episodes of the world, under random legal play."""
    from esper.simic.env import EsperEnv

    env, rng, out = EsperEnv(WORLD), np.random.default_rng(seed), []
    obs, _ = env.reset(seed=seed)
    while len(out) < n:
        out.append((obs["features"].tolist(), obs["action_mask"].tolist()))
        m = env.model.masks()
        op = int(rng.choice(np.flatnonzero(m.op)))
        slot = int(rng.choice(np.flatnonzero(m.slot[op])))
        _, bp, blend = m.head_masks(op, slot)
        action = [op, slot, int(rng.choice(np.flatnonzero(bp))), int(rng.choice(np.flatnonzero(blend)))]
        obs, _, done, _, _ = env.step(np.array(action))
        if done:
            obs, _ = env.reset(seed=int(rng.integers(1000)))
    return out


def test_http_decisions_equal_the_in_process_policy(served):
    """The served answers (action, probability, value) are what the same agent.pt computes in this process."""
    cfg, url, _ = served
    agent = load_agent(cfg.agent)
    client = TamiyoClient(url)
    rows = observations(12)
    batch = client.decide_batch(rows)
    for (features, mask), from_batch in zip(rows, batch):
        got = client.decide(features, mask)
        out = agent.net(torch.tensor([features]), torch.tensor([mask]), mode="greedy")
        expected = out.actions[0].tolist()
        assert [got["action"][k] for k in ("op", "slot", "blueprint", "blend")] == expected
        assert [from_batch["action"][k] for k in ("op", "slot", "blueprint", "blend")] == expected
        assert got["probability"] == pytest.approx(float(out.logp.exp()), rel=1e-5)
        assert got["value"] == pytest.approx(float(agent.net.value(torch.tensor([features]))), abs=1e-5)


def test_bad_input_over_serve_is_a_4xx_and_the_server_keeps_serving(served):
    """Through the real Serve stack (not only the ASGI app): client mistakes are 4xx, then a good request works."""
    _, url, _ = served
    features, mask = observations(1)[0]
    for body, status in ((b"not json", 422), (b'{"features": [NaN], "action_mask": [1]}', 422),
                         (b'{"features": [1.0], "action_mask": [1.0]}', 422), (b"[" * 5000, 400)):
        r = requests.post(url + "/v1/decide", data=body, headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code == status, (body[:40], r.status_code, r.text[:200])
        assert "error" in r.json()
    assert requests.post(url + "/v1/decide", json={"features": features, "action_mask": mask}, timeout=10).status_code == 200


def test_remote_job_equals_the_in_process_run(served):
    """A Tolaria job steered over HTTP makes the same decisions and reaches the same accuracy as in-process."""
    cfg, url, _ = served
    remote = RemoteTamiyo(TamiyoClient(url))
    over_http = train(WORLD, remote, seed=3)
    local = train(WORLD, NeuralTamiyo(load_agent(cfg.agent)), seed=3)
    assert remote.fallbacks == 0 and remote.answered == WORLD.trainer.epochs
    assert [d.split(" (")[0] for d in over_http.decisions] == [d.split(" (")[0] for d in local.decisions]
    assert over_http.metric_history == local.metric_history
    assert over_http.params_total == local.params_total


def test_remote_job_survives_the_server_stopping_and_returning(served):
    """Server stopped after epoch 1 and restarted after epoch 3: the job finishes, falls back meanwhile, and
    uses the server again once it is back."""
    from esper.serve import launch

    cfg, url, _ = served
    remote = RemoteTamiyo(TamiyoClient(url, timeout_s=1.0, retries=1, backoff_s=0.05))
    answered_at: list[int] = []
    original = remote.decide

    def decide(obs):
        epoch = obs.signals.epoch
        if epoch == 1:
            launch.stop()
        elif epoch == 3:
            launch.start(cfg)
        before = remote.answered
        decision = original(obs)
        if remote.answered > before:
            answered_at.append(epoch)
        return decision

    remote.decide = decide
    result = train(WORLD, remote, seed=4)
    assert len(result.metric_history) == WORLD.trainer.epochs
    assert remote.fallbacks >= 2  # epochs 1 and 2 had no server
    assert 0 in answered_at and max(answered_at) >= 3, answered_at


def test_a_broken_agent_is_refused_before_serve_is_touched(served, tmp_path):
    """Reloading NaN weights fails in the caller with a clear error; the served version is unchanged."""
    from esper.serve import launch

    cfg, url, _ = served
    bad = make_agent(tmp_path / "nan.pt", 5)
    payload = torch.load(bad, weights_only=True)
    payload["state_dict"] = {k: torch.full_like(v, float("nan")) for k, v in payload["state_dict"].items()}
    torch.save(payload, bad)
    before = requests.get(url + "/healthz", timeout=10).json()["policy_version"]
    with pytest.raises(RuntimeError, match="canary"):
        launch.reload(cfg.model_copy(update={"agent": bad}))
    assert requests.get(url + "/healthz", timeout=10).json()["policy_version"] == before


def test_hot_reload_under_traffic_drops_no_request(served):
    """Swapping agent.pt while clients keep asking: every request succeeds and the new version takes over."""
    from esper.serve import launch

    cfg, url, d = served
    new_cfg = cfg.model_copy(update={"agent": make_agent(d / "b.pt", 2)})
    features, mask = observations(1)[0]
    statuses, versions, stop = [], set(), threading.Event()

    def traffic():
        s = requests.Session()
        while not stop.is_set():
            r = s.post(url + "/v1/decide", json={"features": features, "action_mask": mask}, timeout=30)
            statuses.append(r.status_code)
            if r.status_code == 200:
                versions.add(r.json()["policy_version"])

    old = requests.get(url + "/healthz", timeout=10).json()["policy_version"]
    t = threading.Thread(target=traffic)
    t.start()
    try:
        launch.reload(new_cfg)
        deadline = time.time() + 90
        while time.time() < deadline and requests.get(url + "/healthz", timeout=10).json()["policy_version"] == old:
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        t.join()
    assert statuses and all(s == 200 for s in statuses), sorted(set(statuses))
    assert versions == {old, file_digest(new_cfg.agent)}, versions


def test_a_replica_failing_its_health_check_is_replaced(served, tmp_path):
    """check_health raising (here: in the replica whose pid a marker file names) makes Serve replace it."""
    import os

    import ray
    from ray import serve

    from esper.serve.deployment import TamiyoServer

    marker = tmp_path / "unhealthy-pid"

    class FailsOnce(TamiyoServer):
        def check_health(self) -> None:  # Serve needs 3 failures in a row: fail for as long as we are named
            if marker.exists() and marker.read_text() == str(os.getpid()):
                raise RuntimeError("injected health-check failure")
            super().check_health()

        def pid(self) -> int:
            return os.getpid()

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the class lives in this test module
    cfg, _, _ = served
    app = serve.deployment(FailsOnce, name="FailsOnce", health_check_period_s=0.5, health_check_timeout_s=5,
                           user_config={"agent": str(cfg.agent)}).bind(None, 1 << 20, 8, 0.001)
    handle = serve.run(app, name="fails-once", route_prefix="/fails-once")
    try:
        first = handle.pid.remote().result()
        marker.write_text(str(first))
        deadline, pid = time.time() + 60, first
        while time.time() < deadline and pid == first:
            time.sleep(0.5)
            try:
                pid = handle.pid.remote().result(timeout_s=5)
            except Exception:  # the old replica is going away: ask again
                continue
        assert pid != first, "the unhealthy replica was not replaced within 60 s"
    finally:
        serve.delete("fails-once")


def text_world(folder: Path) -> WorldConfig:
    """A character transformer on a small corpus of its own (tests never read ../shared), token seeds, graft lifecycle."""
    text = "".join(f"line {i % 7}: the quick brown fox jumps over the lazy dog.\n" for i in range(60))
    (folder / "corpus.txt").write_text(text, encoding="utf-8")
    return WorldConfig.model_validate({
        "data": {"task": "char_lm", "source": str(folder / "corpus.txt"), "block_size": 16, "val_windows": 8},
        "host": {"name": "transformer", "preset": "custom", "n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16,
                 "vocab_size": len(set(text))},
        "kasmina": {"blueprints": ["block_copy", "attention_head", "token_mlp", "lora"], "lifecycle": "graft"},
        "trainer": {"epochs": 6, "batch_size": 8, "max_batches_per_epoch": 3, "optimizer": "adamw", "lr": 3e-3,
                    "augment": False},
        "val_images": None, "device": "cpu"})


def test_a_text_world_agent_is_served_and_steers_a_text_job_as_in_process(served, tmp_path):
    """Last in this module (it swaps the served agent): an agent.pt of the text world, hot-reloaded into the
    running server, answers a remote character-transformer job over HTTP; the job makes the same decisions —
    growth among them — and reaches the same validation losses as the same agent in-process."""
    from esper.serve import launch

    cfg, url, _ = served
    world = text_world(tmp_path)
    text_cfg = cfg.model_copy(update={"agent": make_agent(tmp_path / "text.pt", 8, world)})  # seed 8: grows twice
    launch.reload(text_cfg)
    deadline = time.time() + 90
    while requests.get(url + "/healthz", timeout=10).json()["policy_version"] != file_digest(text_cfg.agent):
        assert time.time() < deadline, "the text-world agent never answered"
        time.sleep(0.2)
    remote = RemoteTamiyo(TamiyoClient(url))
    over_http = train(world, remote, seed=5)
    local = train(world, NeuralTamiyo(load_agent(text_cfg.agent)), seed=5)
    assert remote.fallbacks == 0 and remote.answered == world.trainer.epochs
    ops = [d.split(" (")[0].split(": ")[1] for d in over_http.decisions]
    assert "GERMINATE" in ops, ops  # the comparison is not WAIT against WAIT
    assert [d.split(" (")[0] for d in over_http.decisions] == [d.split(" (")[0] for d in local.decisions]
    assert over_http.metric_name == "neg_loss" and over_http.metric_history == local.metric_history
    assert over_http.params_total == local.params_total > 0


def core_agent(path: Path, core, world: WorldConfig, domain: str, seed: int) -> Path:
    """A core agent: the shared core with a random (not a no-op) adapter for `domain`."""
    from esper.tamiyo.adapter import TamiyoAdapter
    from esper.tamiyo.core import LayoutPolicy
    from esper.tolaria.builder import action_spec

    spec = action_spec(world)
    torch.manual_seed(seed)
    adapter = TamiyoAdapter(core, domain)
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_(0.0, 0.3)
    save_agent(path, LayoutPolicy(core, spec, adapter), spec, feature_names(spec), config={}, code_version="test")
    return path


def test_one_deployment_answers_two_domains_and_swaps_one_adapter_under_traffic(served, tmp_path):
    """Last (it swaps the served agents): a vision and a text core agent on one core, hot-reloaded into the running
    deployment; each domain's HTTP answers equal its agent in-process; a new text adapter is swapped in while
    both domains take traffic — no failed request, only the text domain's version changes."""
    from esper.serve import launch
    from esper.tamiyo.core import TamiyoCore

    cfg, url, _ = served
    torch.manual_seed(0)
    core, text = TamiyoCore(32), text_world(tmp_path)
    agents = {"vision": core_agent(tmp_path / "vision.pt", core, WORLD, "vision", 1),
              "text": core_agent(tmp_path / "text.pt", core, text, "text", 2)}
    two = cfg.model_copy(update={"agent": None, "domains": agents})
    launch.reload(two)
    deadline = time.time() + 90
    while set(requests.get(url + "/healthz", timeout=10).json().get("domains", {})) != {"vision", "text"}:
        assert time.time() < deadline, "the two domains never answered"
        time.sleep(0.2)
    vision_obs = observations(8)
    for features, mask in vision_obs:
        r = requests.post(url + "/v1/decide", json={"features": features, "action_mask": mask, "domain": "vision"}, timeout=30)
        local = load_agent(agents["vision"]).net(torch.tensor([features]), torch.tensor([mask]), mode="greedy")
        assert [r.json()["action"][k] for k in ("op", "slot", "blueprint", "blend")] == local.actions[0].tolist()
    r = requests.post(url + "/v1/decide", json={"features": features, "action_mask": mask, "domain": "audio"}, timeout=30)
    assert r.status_code == 422 and "['text', 'vision']" in r.json()["error"]

    text_agent = load_agent(agents["text"])
    n_f = text_agent.net.n_features
    text_mask = [1.0] * text_agent.spec.mask_size
    statuses, versions, stop = [], {"vision": set(), "text": set()}, threading.Event()

    def traffic(domain, features, mask):
        s = requests.Session()
        while not stop.is_set():
            r = s.post(url + "/v1/decide", json={"features": features, "action_mask": mask, "domain": domain}, timeout=30)
            statuses.append(r.status_code)
            if r.status_code == 200:
                versions[domain].add(r.json()["policy_version"])

    old = requests.get(url + "/healthz", timeout=10).json()["domains"]
    swapped = two.model_copy(update={"domains": agents | {"text": core_agent(tmp_path / "text2.pt", core, text, "text", 3)}})
    threads = [threading.Thread(target=traffic, args=("vision", *vision_obs[0])),
               threading.Thread(target=traffic, args=("text", [0.0] * n_f, text_mask))]
    for t in threads:
        t.start()
    try:
        launch.reload(swapped)
        deadline = time.time() + 90
        while time.time() < deadline and requests.get(url + "/healthz", timeout=10).json()["domains"]["text"] == old["text"]:
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert statuses and all(s == 200 for s in statuses), sorted(set(statuses))
    assert versions["vision"] == {old["vision"]}
    assert versions["text"] == {old["text"], file_digest(swapped.domains["text"])}
