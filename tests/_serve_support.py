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
                           val_metric=accs[-1] if accs else 0.0, host_params=host_params, chance_loss=math.log(NUM_CLASSES),
                           loss_history=tuple(2.3 - 0.1 * i for i in range(epoch)), metric_history=accs)


def observation(epoch: int = 3) -> Observation:
    """A real decision point of a fresh tiny model (every slot dormant: WAIT or GERMINATE are legal)."""
    model = tiny_model()
    return Observation(signals_at(epoch, model.param_counts().host), model.reports(), model.masks(), model.action_spec)


def greedy_in_process(policy: ServedPolicy, obs: Observation) -> FactoredAction:
    features = torch.as_tensor(encode(obs.spec, obs.signals, obs.reports))[None]
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


# ---------------------------------------------------------------------------------------------- bad inputs


def mask_variant(good: dict, spec, edit) -> dict:
    """`good` with its mask parsed, edited in place by `edit(masks)` and flattened again."""
    m = ActionMasks.from_flat(spec, np.asarray(good["action_mask"], dtype=np.float32))
    m = ActionMasks(m.op.copy(), m.slot.copy(), m.blueprint.copy(), m.blend.copy())
    edit(m)
    return good | {"action_mask": m.flat().tolist()}


def _forbid_wait(m):
    m.op[Op.WAIT] = False


def _op_without_slot(m):
    m.op[Op.CULL] = True
    m.slot[Op.CULL] = False


def _germinate_without_blueprint(m):
    m.op[Op.GERMINATE] = True
    m.slot[Op.GERMINATE, 0] = True
    m.blueprint[:] = False


def _no_blend(m):
    m.blend[:] = False


def _wait_without_slot(m):
    m.slot[Op.WAIT] = False


RAW_CASES = {  # name → (raw body, expected status(es), fragment of the error text)
    "non_json": (b"this is not json", {400, 422}, "json"),
    "empty_body": (b"", {400, 422}, None),
    "truncated_json": (b'{"features": [0.1, 0.2', {400, 422}, "json"),
    "nan_feature": (b'{"features": [NaN], "action_mask": [1]}', 422, "finite"),
    "infinity_feature": (b'{"features": [Infinity], "action_mask": [1]}', 422, "finite"),
    "minus_infinity_mask": (b'{"features": [1], "action_mask": [-Infinity]}', 422, "finite"),
    "overflowing_literal": (b'{"features": [1e400], "action_mask": [1]}', 422, "finite"),
    "json_array_body": (b"[1, 2, 3]", 422, None),
    "json_number_body": (b"42", 422, None),
    "deep_nesting": (b"[" * 5000, {400, 413, 422}, None),
    "deep_nesting_closed": (b"[" * 5000 + b"]" * 5000, {400, 413, 422}, None),
    "deep_nesting_in_a_field": (b'{"features": ' + b"[" * 5000 + b"]" * 5000 + b', "action_mask": [1]}',
                                {400, 413, 422}, None),
    "invalid_utf8": (b'{"features": ["\xff\xfe"], "action_mask": [1]}', {400, 422}, None),
}


def json_cases(good: dict, spec) -> dict:
    n_f, n_m = len(good["features"]), len(good["action_mask"])
    return {  # name → (json body, expected status, fragment)
        "wrong_feature_length": (good | {"features": good["features"][:-1]}, 422, f"features must have {n_f}"),
        "too_many_features": (good | {"features": good["features"] + [0.0]}, 422, f"features must have {n_f}"),
        "wrong_mask_length": (good | {"action_mask": good["action_mask"] + [1.0]}, 422, f"action_mask must have {n_m}"),
        "empty_features": (good | {"features": []}, 422, "at least 1"),
        "string_features": (good | {"features": ["abc"] * n_f}, 422, "number"),
        "string_vector": (good | {"features": "abc"}, 422, "list"),
        "nested_lists": (good | {"features": [[x] for x in good["features"]]}, 422, "number"),
        "null_features": (good | {"features": None}, 422, "list"),
        "null_in_mask": (good | {"action_mask": [None] * n_m}, 422, "number"),
        "object_features": (good | {"features": {"a": 1}}, 422, "list"),
        "missing_mask": ({"features": good["features"]}, 422, "required"),
        "extra_field": (good | {"temperature": 0.5}, 422, "extra"),
        "null_sample": (good | {"sample": None}, 422, "boolean"),
        "word_sample": (good | {"sample": "maybe"}, 422, "boolean"),
        "negative_seed": (good | {"sample": True, "seed": -1}, 422, "greater than or equal"),
        "seed_too_large": (good | {"sample": True, "seed": 2**63}, 422, "less than"),
        "fractional_seed": (good | {"sample": True, "seed": 1.5}, 422, "integer"),
        "half_mask_value": (good | {"action_mask": [0.5] + good["action_mask"][1:]}, 422, "0 or 1"),
        "mask_value_two": (good | {"action_mask": [2.0] + good["action_mask"][1:]}, 422, "0 or 1"),
        "negative_mask_value": (good | {"action_mask": [-1.0] + good["action_mask"][1:]}, 422, "0 or 1"),
        "all_zero_mask": (good | {"action_mask": [0.0] * n_m}, 422, "WAIT"),
        "mask_forbids_wait": (mask_variant(good, spec, _forbid_wait), 422, "WAIT"),
        "op_without_slot": (mask_variant(good, spec, _op_without_slot), 422, "CULL but no slot"),
        "wait_without_slot": (mask_variant(good, spec, _wait_without_slot), 422, "WAIT but no slot"),
        "germinate_without_blueprint": (mask_variant(good, spec, _germinate_without_blueprint), 422, "no blueprint"),
        "no_blend_choice": (mask_variant(good, spec, _no_blend), 422, "blend"),
        "unknown_domain": (good | {"domain": "text"}, 422, "unknown domain 'text': this server has ['default']"),
        "empty_domain": (good | {"domain": ""}, 422, "at least 1 character"),
        "domain_not_a_string": (good | {"domain": 3}, 422, "string"),
        "domain_list": (good | {"domain": ["default"]}, 422, "string"),
        "domain_with_slash": (good | {"domain": "../default"}, 422, "pattern"),
        "domain_too_long": (good | {"domain": "d" * 65}, 422, "at most 64"),
    }


JSON_CASE_NAMES = ["wrong_feature_length", "too_many_features", "wrong_mask_length", "empty_features",
                   "string_features", "string_vector", "nested_lists", "null_features", "null_in_mask",
                   "object_features", "missing_mask", "extra_field", "null_sample", "word_sample", "negative_seed",
                   "seed_too_large", "fractional_seed", "half_mask_value", "mask_value_two", "negative_mask_value",
                   "all_zero_mask", "mask_forbids_wait", "op_without_slot", "wait_without_slot",
                   "germinate_without_blueprint", "no_blend_choice", "unknown_domain", "empty_domain",
                   "domain_not_a_string", "domain_list", "domain_with_slash", "domain_too_long"]


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def spec():
    return tiny_model().action_spec


@pytest.fixture(scope="module")
def agent_path(tmp_path_factory, spec) -> Path:
    path = tmp_path_factory.mktemp("serve") / "agent.pt"
    # seed 1: a net whose greedy choice is not WAIT on a fresh plane (tests compare served decisions with a fallback)
    save_agent(path, sharp_net(spec, seed=1), spec, feature_names(spec), config={"world": {"name": "test"}}, code_version="t")
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

