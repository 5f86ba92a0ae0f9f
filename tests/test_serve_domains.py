"""One server, several domains: core agents on one core answer by the request's `domain` (the first is the
default), each exactly as its in-process policy; their core is one object; unknown domains are a 422 naming the
known ones; sets that share no core are refused at start-up."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from esper.leyline.features import feature_names
from esper.serve.api import InProcessBackend, build_api, guarded
from esper.serve.config import ServeConfig
from esper.serve.deployment import agents_of
from esper.serve.domains import ServedDomains
from esper.tamiyo.adapter import TamiyoAdapter
from esper.tamiyo.agent_file import save_agent
from esper.tamiyo.core import LayoutPolicy, TamiyoCore
from esper.tolaria.builder import action_spec
from test_tamiyo_core import _batch, _walk_masks, _world

TOKEN = "domain-token-0123456789"


def _adapted(core, spec, domain: str, seed: int) -> LayoutPolicy:
    """A core agent whose adapter is not a no-op (random deltas), so domains decide differently."""
    torch.manual_seed(seed)
    adapter = TamiyoAdapter(core, domain)
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_(0.0, 0.3)
    return LayoutPolicy(core, spec, adapter)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("domains")
    torch.manual_seed(0)
    core = TamiyoCore(32)
    out = {}
    for domain, preset, seed in (("vision", "family", 1), ("text", "shakespeare-cpu", 2)):
        world = _world(preset)
        spec = action_spec(world)
        policy = _adapted(core, spec, domain, seed)
        save_agent(folder / f"{domain}.pt", policy, spec, feature_names(spec), config={})
        out[domain] = (folder / f"{domain}.pt", policy, _batch(spec, _walk_masks(world, steps=20), 16, seed=seed))
    return out


@pytest.fixture(scope="module")
def client(served):
    domains = ServedDomains.load({name: path for name, (path, _, _) in served.items()})
    return TestClient(guarded(build_api(InProcessBackend(domains)), TOKEN, 1 << 20),
                      headers={"Authorization": f"Bearer {TOKEN}"}, raise_server_exceptions=False)


def _body(features, mask, **extra) -> dict:
    return {"features": features.tolist(), "action_mask": mask.tolist(), **extra}


def test_each_domain_decides_as_its_own_policy_and_the_first_is_the_default(client, served):
    for domain, (_, policy, (features, masks)) in served.items():
        with torch.no_grad():
            expected = policy(features, masks, mode="greedy").actions.tolist()
        got = [client.post("/v1/decide", json=_body(f, m, domain=domain)).json() for f, m in zip(features, masks)]
        assert [[d["action"][k] for k in ("op", "slot", "blueprint", "blend")] for d in got] == expected
        batch = client.post("/v1/decide/batch", json={"observations": [_body(f, m) for f, m in zip(features, masks)],
                                                      "domain": domain})
        assert batch.status_code == 200, batch.text
        assert [[d["action"][k] for k in ("op", "slot", "blueprint", "blend")] for d in batch.json()["decisions"]] == expected
    features, masks = served["vision"][2]
    default = client.post("/v1/decide", json=_body(features[0], masks[0]))
    assert default.status_code == 200 and default.json() == client.post(
        "/v1/decide", json=_body(features[0], masks[0], domain="vision")).json()


def test_a_text_observation_sent_to_the_vision_domain_is_a_422_not_a_500(client, served):
    features, masks = served["text"][2]
    r = client.post("/v1/decide", json=_body(features[0], masks[0], domain="vision"))
    assert r.status_code == 422 and "features must have" in r.json()["error"]


def test_unknown_domains_are_refused_naming_the_known_ones(client, served):
    features, masks = served["vision"][2]
    for path, body in (("/v1/decide", _body(features[0], masks[0], domain="audio")),
                       ("/v1/decide/batch", {"observations": [_body(features[0], masks[0])], "domain": "audio"})):
        r = client.post(path, json=body)
        assert r.status_code == 422 and r.json()["error"] == "unknown domain 'audio': this server has ['text', 'vision']"


def test_the_policy_endpoint_lists_the_domains_and_the_core_is_held_once(client, served):
    info = client.get("/v1/policy").json()
    assert info["domain"] == "vision" and sorted(info["domains"]) == ["text", "vision"]
    hashes = {d["manifest"]["network"]["core_hash"] for d in info["domains"].values()}
    assert len(hashes) == 1
    assert info["domains"]["text"]["manifest"]["network"]["adapter"]["domain"] == "text"
    assert client.get("/healthz").json()["domains"].keys() == {"vision", "text"}
    domains = ServedDomains.load({name: path for name, (path, _, _) in served.items()})
    cores = {id(p.agent.net.core) for p in domains.policies.values()}
    assert len(cores) == 1


def test_domains_on_different_cores_or_flat_agents_are_refused(served, tmp_path):
    from _serve_support import sharp_net  # the flat MLP agents the single-agent tests serve

    torch.manual_seed(5)
    spec = action_spec(_world("family"))
    save_agent(tmp_path / "other.pt", _adapted(TamiyoCore(32), spec, "vision", 3), spec, feature_names(spec), config={})
    with pytest.raises(ValueError, match="different cores"):
        ServedDomains.load({"text": served["text"][0], "vision": tmp_path / "other.pt"})
    save_agent(tmp_path / "flat.pt", sharp_net(spec), spec, feature_names(spec), config={})
    with pytest.raises(ValueError, match="not core agents"):
        ServedDomains.load({"text": served["text"][0], "flat": tmp_path / "flat.pt"})
    assert ServedDomains.load({"": tmp_path / "flat.pt"}).default == "default"  # one flat agent still serves


def test_serve_config_takes_an_agent_or_domains_and_the_deployment_reads_both_forms(served):
    paths = {name: path for name, (path, _, _) in served.items()}
    cfg = ServeConfig(domains=paths)
    assert list(cfg.agents()) == ["vision", "text"]
    with pytest.raises(ValueError, match="not both or neither"):
        ServeConfig(agent=paths["text"], domains=paths)
    with pytest.raises(ValueError, match="not both or neither"):
        ServeConfig()
    with pytest.raises(ValueError, match="pattern"):
        ServeConfig(domains={"bad name": paths["text"]})
    assert agents_of({"agent": "/a.pt"}) == {"": "/a.pt"} and agents_of({"agents": cfg.agents()}) == cfg.agents()


def test_the_client_asks_for_its_domain(served):
    from _serve_support import free_port, live_server

    from esper.serve.client import TamiyoClient

    domains = ServedDomains.load({name: path for name, (path, _, _) in served.items()})
    app = guarded(build_api(InProcessBackend(domains)), TOKEN, 1 << 20)
    port = free_port()
    with live_server(app, port):
        url = f"http://127.0.0.1:{port}"
        _, policy, (features, masks) = served["text"]
        with torch.no_grad():
            expected = policy(features[:4], masks[:4], mode="greedy").actions.tolist()
        client = TamiyoClient(url, token=TOKEN, domain="text")
        got = [client.decide(f.tolist(), m.tolist())["action"] for f, m in zip(features[:4], masks[:4])]
        assert [[a[k] for k in ("op", "slot", "blueprint", "blend")] for a in got] == expected
        batch = client.decide_batch([(f.tolist(), m.tolist()) for f, m in zip(features[:4], masks[:4])])
        assert [[d["action"][k] for k in ("op", "slot", "blueprint", "blend")] for d in batch] == expected
        with pytest.raises(ValueError, match="unknown domain 'audio'"):
            TamiyoClient(url, token=TOKEN, domain="audio").decide(features[0].tolist(), masks[0].tolist())
