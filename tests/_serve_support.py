"""Helpers and fixtures shared by the served-Tamiyo API tests (test_serve_api/_fuzz/_client): a sharp policy
saved as agent.pt, the guarded in-process app, realistic observations, a loopback uvicorn server. The test
modules star-import this module, which brings the fixtures into their namespace for pytest."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import uvicorn
from _support import tiny_model
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from esper.leyline import ActionMasks, FactoredAction, Op
from esper.leyline.actions import OP_USES
from esper.leyline.control import Decision, Observation
from esper.leyline.features import encode, feature_names, feature_size
from esper.leyline.signals import TrainingSignals
from esper.serve.api import InProcessBackend, build_api, guarded
from esper.serve.client import RemoteTamiyo, TamiyoClient, TamiyoUnavailable
from esper.serve.config import ServeConfig
from esper.serve.policy import BadObservation, ServedPolicy, check_mask
from esper.serve.schemas import MAX_BATCH
from esper.tamiyo.agent_file import save_agent
from esper.tamiyo.policy import TamiyoPolicyNet

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BODY = 256 * 1024  # a 64-row batch of realistic observations is ~120 KB
NUM_CLASSES = 10
JSON_CT = {"content-type": "application/json"}


# ---------------------------------------------------------------------------------------------- helpers


def sharp_net(spec, seed: int = 0, hidden: int = 32) -> TamiyoPolicyNet:
    """A policy net whose heads are sharpened so greedy actions are not ties (as in test_agent_file.make_net)."""
    torch.manual_seed(seed)
    net = TamiyoPolicyNet(feature_size(spec), spec.nvec, hidden=hidden)
    with torch.no_grad():
        for head in (net.op_head, net.slot_head, net.blueprint_head, net.blend_head):
            head.weight.normal_(0.0, 1.0)
            head.bias.normal_(0.0, 1.0)
    return net


def legal_walk_masks(steps: int = 60, seed: int = 0) -> list[np.ndarray]:
    """Flat masks of plane states reached by a random legal walk on a tiny model (realistic masks)."""
    rng = np.random.default_rng(seed)
    model = tiny_model()
    masks = []
    for _ in range(steps):
        m = model.masks()
        masks.append(m.flat())
        op = int(rng.choice(np.flatnonzero(m.op)))
        slot = int(rng.choice(np.flatnonzero(m.slot[op])))
        _, bp, blend = m.head_masks(op, slot)
        bp_i, blend_i = int(rng.choice(np.flatnonzero(bp))), int(rng.choice(np.flatnonzero(blend)))
        model.apply(FactoredAction(Op(op), slot, bp_i, blend_i))
        model.step_epoch()
    return masks


def body(features, mask, **extra) -> dict:
    return {"features": [float(x) for x in features], "action_mask": [float(x) for x in mask], **extra}


def action_of(decision: dict) -> FactoredAction:
    a = decision["action"]
    return FactoredAction(Op(a["op"]), a["slot"], a["blueprint"], a["blend"])


def assert_error_body(r, status: int | set[int], fragment: str | None = None) -> None:
    """A client mistake: the expected 4xx, a JSON body {"error": <readable text>}, mentioning `fragment`."""
    allowed = {status} if isinstance(status, int) else status
    assert r.status_code in allowed, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    err = r.json()
    assert isinstance(err, dict) and isinstance(err.get("error"), str) and len(err["error"]) > 5, err
    if fragment is not None:
        text = err["error"] + " " + " ".join(str(d.get("msg", "")) for d in err.get("detail", []))
        assert fragment.lower() in text.lower(), err


def signals_at(epoch: int, host_params: int = 10_000) -> TrainingSignals:
    accs = tuple(0.1 + 0.05 * i for i in range(epoch))
    return TrainingSignals(epoch=epoch, max_epochs=10, train_loss=2.3 - 0.1 * epoch, val_loss=2.3 - 0.08 * epoch,
                           val_accuracy=accs[-1] if accs else 0.0, host_params=host_params,
                           loss_history=tuple(2.3 - 0.1 * i for i in range(epoch)), accuracy_history=accs)


def observation(epoch: int = 3) -> Observation:
    """A real decision point of a fresh tiny model (every slot dormant: WAIT or GERMINATE are legal)."""
    model = tiny_model()
    return Observation(signals_at(epoch, model.param_counts().host), model.reports(), model.masks(), model.action_spec)


def greedy_in_process(policy: ServedPolicy, obs: Observation) -> FactoredAction:
    features = torch.as_tensor(encode(obs.spec, obs.signals, obs.reports, NUM_CLASSES))[None]
    mask = torch.as_tensor(obs.masks.flat())[None]
    with torch.no_grad():
        return FactoredAction.from_array(policy.agent.net(features, mask, mode="greedy").actions[0].tolist())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(app, port: int):
    """`app` served by uvicorn on 127.0.0.1:`port` in a background thread, for the duration of the block."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive(), "uvicorn did not stop"


class Counting:
    """ASGI wrapper recording (method, path) of every HTTP request that reaches the server."""

    def __init__(self, app) -> None:
        self.app, self.calls = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.calls.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def spec():
    return tiny_model().action_spec


@pytest.fixture(scope="module")
def agent_path(tmp_path_factory, spec) -> Path:
    path = tmp_path_factory.mktemp("serve") / "agent.pt"
    save_agent(path, sharp_net(spec), spec, feature_names(spec), config={"world": {"name": "test"}}, code_version="t")
    return path


@pytest.fixture(scope="module")
def policy(agent_path) -> ServedPolicy:
    return ServedPolicy(agent_path)


@pytest.fixture(scope="module")
def app(policy):
    return guarded(build_api(InProcessBackend(policy)), TOKEN, MAX_BODY)


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    # raise_server_exceptions=False: a handler crash must show up as the 500 a real client would see
    return TestClient(app, headers=AUTH, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def inputs(spec) -> tuple[torch.Tensor, torch.Tensor]:
    """64 realistic (features, mask) rows: random bounded features, masks from a legal walk."""
    masks = legal_walk_masks()
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(64, feature_size(spec), generator=gen).clamp(-5, 5)
    mask = torch.as_tensor(np.stack(masks))[torch.randint(0, len(masks), (64,), generator=gen)]
    return features, mask


@pytest.fixture(scope="module")
def good(inputs) -> dict:
    features, masks = inputs
    return body(features[0], masks[0])


def still_serving(client, good) -> None:
    r = client.post("/v1/decide", json=good)
    assert r.status_code == 200, r.text

