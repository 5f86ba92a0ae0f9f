"""The served Tamiyo's HTTP API without Ray: answers equal the in-process policy, every client mistake is a readable
4xx (never a 500) and the app keeps serving, the request schema survives fuzzing, the policy identity is its
content hash, ServeConfig refuses exposed tokenless serving, and TamiyoClient / RemoteTamiyo behave against a real
loopback server that goes down and comes back."""

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


# ---------------------------------------------------------------------------------------------- 1. decisions


def test_greedy_decisions_over_http_equal_the_in_process_policy(client, policy, inputs):
    """POST /v1/decide (greedy) gives the net's greedy action, p = exp(logp), and the critic's value."""
    features, masks = inputs
    with torch.no_grad():
        out = policy.agent.net(features, masks, mode="greedy")
        values = policy.agent.net.value(features)
    assert len(set(map(tuple, out.actions.tolist()))) > 3  # the comparison is not between constant outputs
    for i in range(len(features)):
        r = client.post("/v1/decide", json=body(features[i], masks[i]))
        assert r.status_code == 200, r.text
        d = r.json()
        assert action_of(d) == FactoredAction.from_array(out.actions[i].tolist()), i
        assert d["action"]["op_name"] == Op(d["action"]["op"]).name
        assert d["probability"] == pytest.approx(math.exp(float(out.logp[i])), rel=1e-5, abs=1e-7)
        assert d["value"] == pytest.approx(float(values[i]), rel=1e-5, abs=1e-6)
        assert d["policy_version"] == policy.version


def test_batch_decisions_equal_the_in_process_policy_in_order(client, policy, inputs):
    """POST /v1/decide/batch answers every row, in order, with the net's greedy action and value."""
    features, masks = inputs
    with torch.no_grad():
        out = policy.agent.net(features, masks, mode="greedy")
        values = policy.agent.net.value(features)
    r = client.post("/v1/decide/batch", json={"observations": [body(f, m) for f, m in zip(features, masks)]})
    assert r.status_code == 200, r.text
    decisions = r.json()["decisions"]
    assert len(decisions) == len(features)
    assert [list(action_of(d).as_array()) for d in decisions] == out.actions.tolist()
    for i, d in enumerate(decisions):
        assert d["probability"] == pytest.approx(math.exp(float(out.logp[i])), rel=1e-5, abs=1e-7)
        assert d["value"] == pytest.approx(float(values[i]), rel=1e-5, abs=1e-6)


def test_sampled_decisions_with_the_same_seed_are_identical(client, inputs):
    """Same observation and seed → the same sampled action and probability, call after call; seeds matter."""
    features, masks = inputs
    by_seed = {}
    for seed in range(24):
        req = body(features[5], masks[5], sample=True, seed=seed)
        first, second = client.post("/v1/decide", json=req).json(), client.post("/v1/decide", json=req).json()
        assert action_of(first) == action_of(second) and first["probability"] == second["probability"], seed
        by_seed[seed] = action_of(first)
    assert len(set(by_seed.values())) > 1, "sampling ignores the seed (or the observation has one legal action)"


def test_batch_row_i_is_sampled_with_seed_plus_i(client, inputs):
    """A sampled batch with seed s answers row i like a single sampled request with seed s + i."""
    features, masks = inputs
    rows = range(0, 16)
    r = client.post("/v1/decide/batch", json={"observations": [body(features[i], masks[i]) for i in rows],
                                              "sample": True, "seed": 100})
    assert r.status_code == 200, r.text
    for i, d in zip(rows, r.json()["decisions"]):
        single = client.post("/v1/decide", json=body(features[i], masks[i], sample=True, seed=100 + i)).json()
        assert action_of(d) == action_of(single), i
        assert d["probability"] == pytest.approx(single["probability"], rel=1e-6)


def test_sampled_actions_are_always_legal_under_the_mask(client, spec, inputs):
    """Every sampled action (64 realistic observations × 6 seeds) is allowed by the mask it was sampled under."""
    features, masks = inputs
    seen_ops = set()
    for seed in range(0, 6 * 1000, 1000):
        r = client.post("/v1/decide/batch", json={"observations": [body(f, m) for f, m in zip(features, masks)],
                                                  "sample": True, "seed": seed})
        assert r.status_code == 200, r.text
        for i, d in enumerate(r.json()["decisions"]):
            action = action_of(d)
            assert ActionMasks.from_flat(spec, masks[i].numpy()).allows(action), (i, seed, d)
            assert 0.0 < d["probability"] <= 1.0
            seen_ops.add(action.op)
    assert len(seen_ops) >= 3, seen_ops  # the masks exercised more than WAIT/GERMINATE


def test_largest_seed_is_accepted_in_a_sampled_batch(client, good):
    """seed = 2**63 - 1 is in range; rows get seed + i beyond 2**63 and must still be answered."""
    r = client.post("/v1/decide/batch", json={"observations": [good, good, good], "sample": True, "seed": 2**63 - 1})
    assert r.status_code == 200, r.text
    assert len(r.json()["decisions"]) == 3


# ---------------------------------------------------------------------------------------------- 2. bad inputs


def _mask_variant(good: dict, spec, edit) -> dict:
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


@pytest.mark.parametrize("name", list(RAW_CASES))
def test_malformed_raw_bodies_get_a_readable_4xx_and_the_app_keeps_serving(client, good, name):
    """Unparseable, non-finite, non-object and absurdly nested bodies: a JSON 4xx, never a 500."""
    raw, status, fragment = RAW_CASES[name]
    r = client.post("/v1/decide", content=raw, headers=JSON_CT)
    assert_error_body(r, status, fragment)
    still_serving(client, good)


def _json_cases(good: dict, spec) -> dict:
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
        "mask_forbids_wait": (_mask_variant(good, spec, _forbid_wait), 422, "WAIT"),
        "op_without_slot": (_mask_variant(good, spec, _op_without_slot), 422, "CULL but no slot"),
        "wait_without_slot": (_mask_variant(good, spec, _wait_without_slot), 422, "WAIT but no slot"),
        "germinate_without_blueprint": (_mask_variant(good, spec, _germinate_without_blueprint), 422, "no blueprint"),
        "no_blend_choice": (_mask_variant(good, spec, _no_blend), 422, "blend"),
    }


JSON_CASE_NAMES = ["wrong_feature_length", "too_many_features", "wrong_mask_length", "empty_features",
                   "string_features", "string_vector", "nested_lists", "null_features", "null_in_mask",
                   "object_features", "missing_mask", "extra_field", "null_sample", "word_sample", "negative_seed",
                   "seed_too_large", "fractional_seed", "half_mask_value", "mask_value_two", "negative_mask_value",
                   "all_zero_mask", "mask_forbids_wait", "op_without_slot", "wait_without_slot",
                   "germinate_without_blueprint", "no_blend_choice"]


def test_json_case_table_is_complete(good, spec):
    """Every bad-JSON case is parametrised (guards the hand-written id list against drift)."""
    assert sorted(_json_cases(good, spec)) == sorted(JSON_CASE_NAMES)


@pytest.mark.parametrize("name", JSON_CASE_NAMES)
def test_bad_observations_get_422_with_a_readable_error_and_the_app_keeps_serving(client, good, spec, name):
    """Wrong sizes, types, extra fields, bad seeds and unusable masks: 422 {"error": ...}, then a good request works."""
    payload, status, fragment = _json_cases(good, spec)[name]
    r = client.post("/v1/decide", json=payload)
    assert_error_body(r, status, fragment)
    still_serving(client, good)


def test_valid_realistic_mask_variant_is_accepted(client, good, spec):
    """Control for the mask cases: the unedited mask, re-flattened by the same helper, is answered 200."""
    r = client.post("/v1/decide", json=_mask_variant(good, spec, lambda m: None))
    assert r.status_code == 200, r.text


def test_bad_row_in_a_batch_is_named_by_its_index(client, good):
    """A batch with one bad observation is refused with 422 naming observations[i]."""
    bad = good | {"features": good["features"][:3]}
    r = client.post("/v1/decide/batch", json={"observations": [good, good, good, bad, good]})
    assert_error_body(r, 422, "observations[3]")
    still_serving(client, good)


def test_empty_batch_is_refused(client, good):
    """observations = [] → 422."""
    assert_error_body(client.post("/v1/decide/batch", json={"observations": []}), 422, "at least 1")
    still_serving(client, good)


def test_batch_larger_than_max_batch_is_refused(client, good):
    """MAX_BATCH + 1 tiny observations → 422 from the schema before any row is read; MAX_BATCH rows pass it."""
    tiny = {"features": [0], "action_mask": [1]}
    r = client.post("/v1/decide/batch", json={"observations": [tiny] * (MAX_BATCH + 1)})
    assert_error_body(r, 422, f"at most {MAX_BATCH}")
    r = client.post("/v1/decide/batch", json={"observations": [tiny] * MAX_BATCH})
    assert_error_body(r, 422, "observations[0]")  # past the length check, refused for the row's size
    still_serving(client, good)


def test_body_over_the_limit_with_content_length_is_413(client, good):
    """A declared body larger than max_body_bytes is refused with 413 before it is read."""
    raw = json.dumps(good | {"features": good["features"] * 200}).encode()
    assert len(raw) > MAX_BODY
    r = client.post("/v1/decide", content=raw, headers=JSON_CT)
    assert_error_body(r, 413, f"larger than {MAX_BODY} bytes")
    still_serving(client, good)


def test_streamed_body_over_the_limit_is_413(client, good):
    """A chunked body (no Content-Length) growing past max_body_bytes is refused with 413, like a declared one."""
    def chunks():
        yield b'{"features": ['
        for _ in range(MAX_BODY // 8):
            yield b"0.12345,"
        yield b'0.1], "action_mask": [1]}'

    r = client.post("/v1/decide", content=chunks(), headers=JSON_CT)
    assert_error_body(r, 413, f"larger than {MAX_BODY} bytes")
    still_serving(client, good)


def test_streamed_body_under_the_limit_is_served(client, good):
    """Control: a chunked body within the limit reaches the handler and is answered 200."""
    raw = json.dumps(good).encode()
    r = client.post("/v1/decide", content=(raw[i:i + 100] for i in range(0, len(raw), 100)), headers=JSON_CT)
    assert r.status_code == 200, r.text


def test_features_beyond_float32_range_do_not_crash_the_server(client, good):
    """Finite JSON numbers that overflow float32 (±1e39) must give a 4xx or a finite answer — never a 500."""
    payload = good | {"features": [1e39, -1e39] + good["features"][2:]}
    r = client.post("/v1/decide", json=payload)
    assert r.status_code < 500, r.text
    if r.status_code == 200:
        d = r.json()
        assert math.isfinite(d["probability"]) and math.isfinite(d["value"]), d
    else:
        assert_error_body(r, r.status_code)
    still_serving(client, good)


def test_an_accepted_mask_never_yields_a_forbidden_action(policy, spec):
    """check_mask either refuses a mask, or every greedy and sampled action under it is legal.

    The mask lets GERMINATE use slots 0 and 1 but only slot 1 has blueprints: slot 0 leaves the blueprint head
    with no legal choice."""
    op = np.array([True, True, False, False])
    slot = np.zeros((4, len(spec.slots)), bool)
    slot[Op.WAIT, 0] = slot[Op.GERMINATE, 0] = slot[Op.GERMINATE, 1] = True
    bp = np.zeros((len(spec.slots), len(spec.blueprints)), bool)
    bp[1] = True
    masks = ActionMasks(op, slot, bp, np.ones(spec.nvec[3], bool))
    flat = masks.flat()
    try:
        check_mask(policy.agent, flat)
    except BadObservation:
        return  # refusing the mask is a correct answer
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(64, policy.n_features, generator=gen).clamp(-5, 5).numpy()
    rows = np.tile(flat, (64, 1))
    for sample in (False, True):
        choices = policy.decide(features, rows, [sample] * 64, list(range(64)))
        illegal = [c.action for c in choices if not masks.allows(c.action)]
        assert not illegal, f"accepted mask, then answered forbidden actions (sample={sample}): {illegal[:3]}"


def test_unknown_route_is_404(client, good):
    """GET/POST on a route that does not exist → 404 with an error body."""
    assert_error_body(client.get("/v2/nothing"), 404)
    assert_error_body(client.post("/v1/decide/nope", json=good), 404)
    still_serving(client, good)


@pytest.mark.parametrize("method,path", [("GET", "/v1/decide"), ("PUT", "/v1/decide"), ("GET", "/v1/decide/batch"),
                                         ("POST", "/v1/policy"), ("DELETE", "/healthz")])
def test_wrong_method_is_405(client, good, method, path):
    """A known route with the wrong method → 405 with an error body."""
    assert_error_body(client.request(method, path), 405)
    still_serving(client, good)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-0123456789abc"},
                                     {"Authorization": TOKEN}, {"Authorization": f"Bearer {TOKEN}x"},
                                     {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer "}],
                         ids=["missing", "wrong", "no_scheme", "longer", "basic", "empty"])
@pytest.mark.parametrize("method,path", [("POST", "/v1/decide"), ("POST", "/v1/decide/batch"), ("GET", "/v1/policy"),
                                         ("GET", "/not/a/route")])
def test_missing_or_wrong_token_is_401_with_www_authenticate(app, good, headers, method, path):
    """With a token configured, every route but /healthz needs exactly 'Bearer <token>': 401 + WWW-Authenticate."""
    c = TestClient(app, headers=headers, raise_server_exceptions=False)
    r = c.request(method, path, json=good if method == "POST" else None)
    assert_error_body(r, 401, "bearer")
    assert r.headers.get("www-authenticate", "").lower().startswith("bearer"), r.headers


def test_healthz_is_open_without_a_token(app, policy):
    """GET /healthz answers 200 without a token (liveness probes), naming the policy version."""
    r = TestClient(app, raise_server_exceptions=False).get("/healthz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok", "policy_version": policy.version}


def test_no_token_configured_means_no_auth(policy, good):
    """guarded(..., token=None): decisions need no Authorization header."""
    c = TestClient(guarded(build_api(InProcessBackend(policy)), None, MAX_BODY), raise_server_exceptions=False)
    assert c.post("/v1/decide", json=good).status_code == 200


# ---------------------------------------------------------------------------------------------- 3. fuzzing

VALID, LAX, INVALID = 0, 1, 2  # LAX: pydantic's lax coercions (bool→number, 1.0→True, …) — 200 or 4xx both fine
OBS_KEYS = ("features", "action_mask")
DECIDE_KEYS = OBS_KEYS + ("sample", "seed")
# Strings are drawn from letters that never parse as a number or a boolean ('1', 'true', 'on', 'y', 'nan' …):
# pydantic's lax mode (strict=False) coerces those, which the oracle below does not try to mirror.
WORD = st.text(alphabet="abcdgkmxz", max_size=5)
LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                 st.floats(allow_nan=True, allow_infinity=True), WORD)
JSON_VALUE = st.recursive(
    LEAF, lambda kids: st.one_of(st.lists(kids, max_size=5),
                                 st.dictionaries(st.one_of(st.sampled_from(DECIDE_KEYS + ("observations",)), WORD),
                                                 kids, max_size=5)),
    max_leaves=20)
SPECIAL_NUMBERS = st.sampled_from([0, 1, 0.0, 1.0, -0.0, 0.5, 2, -1, 1e-45, 1.0000000001, 1e39, -1e39, 3.4e38,
                                   float("nan"), float("inf"), True, False, None, "x", [], {}])


def _number(x) -> tuple[int, float]:
    """Verdict and value of one vector entry."""
    if isinstance(x, bool):
        return LAX, float(x)
    if isinstance(x, (int, float)) and math.isfinite(x):
        return VALID, float(x)
    return INVALID, 0.0


def _mask_verdict(spec, values: list[float]) -> int:
    f32 = np.asarray(values, dtype=np.float64).astype(np.float32)
    if not np.all((f32 == 0) | (f32 == 1)):
        return INVALID
    verdict = VALID if all(v in (0.0, 1.0) for v in values) else LAX  # 1.0000000001 is 1 in float32
    m = ActionMasks.from_flat(spec, f32)
    if not m.op[Op.WAIT]:
        return INVALID
    for op in np.flatnonzero(m.op):
        slots = np.flatnonzero(m.slot[op])
        if slots.size == 0:
            return INVALID
        if "blueprint" in OP_USES[Op(op)]:
            with_bp = [bool(m.blueprint[s].any()) for s in slots]
            if not any(with_bp):
                return INVALID
            if not all(with_bp):  # some allowed slot has no blueprint: refusing it or never choosing it are both fine
                verdict = max(verdict, LAX)
    if not m.blend.any():
        verdict = max(verdict, INVALID if m.op[Op.GERMINATE] else LAX)  # blend is only read by GERMINATE
    return verdict


def _observation_verdict(spec, n_features: int, obs, keys=OBS_KEYS) -> int:
    if not isinstance(obs, dict) or not set(obs) <= set(keys) or not set(OBS_KEYS) <= set(obs):
        return INVALID
    verdict = VALID
    for name, size in (("features", n_features), ("action_mask", spec.mask_size)):
        vec = obs[name]
        if not isinstance(vec, list) or len(vec) != size:
            return INVALID
        parsed = [_number(x) for x in vec]
        verdict = max([verdict] + [v for v, _ in parsed])
        if verdict == INVALID:
            return INVALID
        if name == "features" and any(abs(x) > float(np.finfo(np.float32).max) for _, x in parsed):
            verdict = max(verdict, LAX)  # overflows float32: refusing or answering finitely are both fine
        if name == "action_mask":
            verdict = max(verdict, _mask_verdict(spec, [x for _, x in parsed]))
    return verdict


def _sample_seed_verdict(req: dict) -> int:
    verdict = VALID
    if "sample" in req:
        s = req["sample"]
        if isinstance(s, bool):
            pass
        elif isinstance(s, (int, float)) and s in (0, 1):
            verdict = LAX
        else:
            return INVALID
    if "seed" in req and req["seed"] is not None:
        s = req["seed"]
        if isinstance(s, bool):
            verdict = max(verdict, LAX)
        elif isinstance(s, int):
            if not 0 <= s < 2**63:
                return INVALID
        elif isinstance(s, float) and math.isfinite(s) and s.is_integer() and 0 <= s < 2**63:
            verdict = max(verdict, LAX)
        else:
            return INVALID
    return verdict


def decide_verdict(spec, n_features: int, req) -> int:
    """Independent oracle of POST /v1/decide: VALID must be 200, INVALID must be 4xx."""
    if not isinstance(req, dict):
        return INVALID
    v = _observation_verdict(spec, n_features, req, DECIDE_KEYS)
    return INVALID if v == INVALID else max(v, _sample_seed_verdict(req))


def batch_verdict(spec, n_features: int, req) -> int:
    """Independent oracle of POST /v1/decide/batch."""
    if not isinstance(req, dict) or not set(req) <= {"observations", "sample", "seed"} or "observations" not in req:
        return INVALID
    obs = req["observations"]
    if not isinstance(obs, list) or not 1 <= len(obs) <= MAX_BATCH:
        return INVALID
    v = max([_sample_seed_verdict(req)] + [_observation_verdict(spec, n_features, o) for o in obs])
    return v


def check_answer(r, verdict: int, masks: list) -> None:
    """The fuzz contract: never ≥ 500; VALID → 200; INVALID → a JSON 4xx; every 200 answer is legal and finite."""
    event(f"HTTP {r.status_code}, oracle {('valid', 'lax', 'invalid')[verdict]}")  # --hypothesis-show-statistics
    assert r.status_code < 500, (r.status_code, r.text)
    if verdict == VALID:
        assert r.status_code == 200, r.text
    if verdict == INVALID:
        assert 400 <= r.status_code < 500, r.text
    if r.status_code == 200:
        decisions = r.json().get("decisions", [r.json()])
        assert len(decisions) == len(masks)
        for d, m in zip(decisions, masks):
            assert m.allows(action_of(d)), (d, "answered an action the request's own mask forbids")
            assert 0.0 < d["probability"] <= 1.0 and math.isfinite(d["value"]), d
    else:
        assert_error_body(r, r.status_code)


def _masks_of(spec, req, batch: bool) -> list:
    rows = req["observations"] if batch else [req]
    return [ActionMasks.from_flat(spec, np.asarray([float(x) for x in o["action_mask"]], np.float64)) for o in rows]


@st.composite
def mutated_requests(draw, base_bodies: list[dict]):
    """A valid /v1/decide body, then 1–3 mutations: fields dropped/replaced/added, entries replaced, mask bits
    flipped, vectors cut or extended, sample/seed changed."""
    req = json.loads(json.dumps(draw(st.sampled_from(base_bodies))))
    if draw(st.booleans()):
        req["sample"] = True
        req["seed"] = draw(st.integers(0, 2**63 - 1))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "set", "entry", "flip", "flip", "cut", "extend", "sample_seed"]))
        if kind == "drop" and req:
            req.pop(draw(st.sampled_from(sorted(req))))
        elif kind == "set":
            req[draw(st.sampled_from(DECIDE_KEYS + ("extra", "observations")))] = draw(JSON_VALUE)
        elif kind in ("entry", "flip", "cut", "extend"):
            name = draw(st.sampled_from(OBS_KEYS))
            vec = req.get(name)
            if not isinstance(vec, list) or not vec:
                continue
            i = draw(st.integers(0, len(vec) - 1))
            if kind == "entry":
                vec[i] = draw(st.one_of(SPECIAL_NUMBERS, JSON_VALUE))
            elif kind == "flip" and isinstance(vec[i], (int, float)) and not isinstance(vec[i], bool):
                vec[i] = 1.0 - vec[i] if vec[i] in (0, 1) else 0.0
            elif kind == "cut":
                del vec[i:]
            elif kind == "extend":
                vec.extend(draw(st.lists(SPECIAL_NUMBERS, min_size=1, max_size=3)))
        elif kind == "sample_seed":
            req[draw(st.sampled_from(["sample", "seed"]))] = draw(st.one_of(SPECIAL_NUMBERS, st.integers(-5, 2**64)))
    return req


@pytest.fixture(scope="module")
def base_bodies(inputs) -> list[dict]:
    features, masks = inputs
    return [body(features[i], masks[i]) for i in range(0, 64, 4)]


@pytest.fixture(scope="module")
def fuzz_client(policy) -> TestClient:
    """No token and a roomy body limit: the fuzz is about the schema, not auth or size."""
    return TestClient(guarded(build_api(InProcessBackend(policy)), None, 1 << 20), raise_server_exceptions=False)


FUZZ = settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_decide_bodies(fuzz_client, policy, spec, base_bodies, data):
    """Mutations of a valid /v1/decide body: never ≥ 500, 200 only for valid bodies, every 200 a legal action."""
    req = data.draw(mutated_requests(base_bodies))
    raw = json.dumps(req, allow_nan=True).encode()
    r = fuzz_client.post("/v1/decide", content=raw, headers=JSON_CT)
    verdict = decide_verdict(spec, policy.n_features, req)
    check_answer(r, verdict, _masks_of(spec, req, batch=False) if verdict != INVALID else [])


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_batch_bodies(fuzz_client, policy, spec, base_bodies, data):
    """Batches of 1–4 bodies, one of them mutated: never ≥ 500, 200 only when every row is valid."""
    rows = data.draw(st.lists(st.sampled_from(base_bodies), min_size=1, max_size=4))
    rows = [json.loads(json.dumps(r)) for r in rows]
    k = data.draw(st.integers(0, len(rows) - 1))
    mutated = data.draw(mutated_requests(base_bodies))
    rows[k] = {key: v for key, v in mutated.items() if key not in ("sample", "seed")}
    req = {"observations": rows}
    if data.draw(st.booleans()):
        req["sample"], req["seed"] = True, data.draw(st.integers(0, 2**63 - 1))
    r = fuzz_client.post("/v1/decide/batch", content=json.dumps(req, allow_nan=True).encode(), headers=JSON_CT)
    verdict = batch_verdict(spec, policy.n_features, req)
    check_answer(r, verdict, _masks_of(spec, req, batch=True) if verdict != INVALID else [])


@FUZZ
@given(value=JSON_VALUE, route=st.sampled_from(["/v1/decide", "/v1/decide/batch"]))
def test_fuzz_arbitrary_json_values(fuzz_client, policy, spec, value, route):
    """Arbitrary JSON (NaN/inf included) on either decision route: never ≥ 500 and never 200 for an invalid body."""
    r = fuzz_client.post(route, content=json.dumps(value, allow_nan=True).encode(), headers=JSON_CT)
    oracle = decide_verdict if route == "/v1/decide" else batch_verdict
    verdict = oracle(spec, policy.n_features, value)
    check_answer(r, verdict, _masks_of(spec, value, route.endswith("batch")) if verdict != INVALID else [])


@FUZZ
@given(data=st.data())
def test_fuzz_raw_text_edits(fuzz_client, policy, spec, base_bodies, data):
    """A valid body's text cut short or with a character inserted: a 4xx when it no longer parses, never a 500."""
    text = json.dumps(data.draw(st.sampled_from(base_bodies)))
    i = data.draw(st.integers(0, len(text)))
    if data.draw(st.booleans()):
        text = text[:i]
    else:
        text = text[:i] + data.draw(st.sampled_from(list('{}[],:"0-.eE \\x'))) + text[i:]
    r = fuzz_client.post("/v1/decide", content=text.encode(), headers=JSON_CT)
    try:
        parsed = json.loads(text)
    except ValueError:
        check_answer(r, INVALID, [])
        return
    verdict = decide_verdict(spec, policy.n_features, parsed)
    check_answer(r, verdict, _masks_of(spec, parsed, batch=False) if verdict != INVALID else [])


def test_fuzz_oracle_agrees_on_known_bodies(good, spec, policy):
    """Sanity of the fuzz oracle itself: the known-good body is VALID, obvious breakages are INVALID."""
    n = policy.n_features
    assert decide_verdict(spec, n, good) == VALID
    assert decide_verdict(spec, n, good | {"seed": 3, "sample": True}) == VALID
    assert decide_verdict(spec, n, good | {"x": 1}) == INVALID
    assert decide_verdict(spec, n, good | {"features": good["features"][:-1]}) == INVALID
    assert decide_verdict(spec, n, good | {"action_mask": [0.0] * spec.mask_size}) == INVALID
    assert decide_verdict(spec, n, good | {"features": [float("nan")] + good["features"][1:]}) == INVALID
    assert decide_verdict(spec, n, [good]) == INVALID
    assert batch_verdict(spec, n, {"observations": [good, good]}) == VALID
    assert batch_verdict(spec, n, {"observations": [good | {"sample": True}]}) == INVALID


# ---------------------------------------------------------------------------------------------- 4. identity


def test_policy_endpoint_describes_the_served_agent(client, policy, agent_path, spec):
    """GET /v1/policy: version = content hash of agent.pt, n_features, mask_size, nvec and feature names."""
    r = client.get("/v1/policy")
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["version"] == hashlib.sha256(agent_path.read_bytes()).hexdigest()[:16] == policy.version
    assert info["observation"]["n_features"] == feature_size(spec)
    assert info["observation"]["mask_size"] == spec.mask_size
    assert info["observation"]["feature_names"] == feature_names(spec)
    assert info["action"]["nvec"] == list(spec.nvec)
    assert info["action"]["ops"] == [o.name for o in Op]
    assert "config" not in info["provenance"]  # training config is not exposed


def test_replacing_agent_file_changes_the_version(tmp_path, spec, good):
    """A new agent.pt at the same path gives a newly loaded ServedPolicy a new version; same bytes → same version."""
    path = tmp_path / "agent.pt"
    save_agent(path, sharp_net(spec, seed=1), spec, feature_names(spec), config={})
    first = ServedPolicy(path)
    save_agent(path, sharp_net(spec, seed=2), spec, feature_names(spec), config={})
    second = ServedPolicy(path)
    assert first.version != second.version
    assert second.version == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    copy = tmp_path / "elsewhere" / "copy.pt"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    assert ServedPolicy(copy).version == second.version  # a content hash, not a path or an mtime
    c = TestClient(guarded(build_api(InProcessBackend(second)), None, MAX_BODY))
    assert c.get("/v1/policy").json()["version"] == second.version
    assert c.post("/v1/decide", json=good).json()["policy_version"] == second.version


# ---------------------------------------------------------------------------------------------- 5. ServeConfig


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org", "", "LOCALHOST", "[::1]"])
def test_non_loopback_host_without_token_is_refused(host):
    """Binding anything but loopback without a token is refused, and the message names the token."""
    with pytest.raises(ValidationError, match="token"):
        ServeConfig(agent="agent.pt", host=host)
    assert ServeConfig(agent="agent.pt", host=host, token=TOKEN).token == TOKEN


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_hosts_need_no_token(host):
    """Loopback addresses may be served without a token."""
    assert ServeConfig(agent="agent.pt", host=host).token is None


@pytest.mark.parametrize("token", ["", "short", "x" * 15])
def test_short_tokens_are_refused(token):
    """Tokens under 16 characters are refused, even on loopback."""
    with pytest.raises(ValidationError, match="16"):
        ServeConfig(agent="agent.pt", host="127.0.0.1", token=token)
    assert ServeConfig(agent="agent.pt", token="x" * 16).token == "x" * 16


def test_extra_config_fields_are_refused():
    """Unknown ServeConfig fields (e.g. a typo) are refused."""
    with pytest.raises(ValidationError, match="(?i)extra"):
        ServeConfig(agent="agent.pt", tokne=TOKEN)


def test_assigning_a_public_host_to_a_tokenless_config_is_refused():
    """validate_assignment: switching a tokenless config to 0.0.0.0 raises."""
    cfg = ServeConfig(agent="agent.pt")
    with pytest.raises(ValidationError, match="token"):
        cfg.host = "0.0.0.0"


# ---------------------------------------------------------------------------------------------- 6. client, live


@pytest.fixture(scope="module")
def counting(app) -> Counting:
    return Counting(app)


@pytest.fixture(scope="module")
def live(counting):
    """The guarded API behind uvicorn on a loopback port, for the tests that need a real socket."""
    with live_server(counting, free_port()) as url:
        yield url


def test_client_decisions_match_the_in_process_policy(live, policy, inputs):
    """TamiyoClient.decide / decide_batch over a real socket give the net's greedy actions."""
    features, masks = inputs
    client = TamiyoClient(live, token=TOKEN, timeout_s=5.0)
    with torch.no_grad():
        expected = policy.agent.net(features[:8], masks[:8], mode="greedy").actions.tolist()
    singles = [client.decide(features[i].numpy(), masks[i].numpy()) for i in range(8)]
    assert [list(action_of(d).as_array()) for d in singles] == expected
    batch = client.decide_batch([(features[i].numpy(), masks[i].numpy()) for i in range(8)])
    assert [list(action_of(d).as_array()) for d in batch] == expected
    assert client.health()["policy_version"] == client.policy()["version"] == policy.version


def test_client_raises_value_error_on_4xx_without_retrying(live, counting, inputs):
    """A 422 (bad observation) or 401 (no token) is a ValueError after exactly one request: never retried."""
    features, masks = inputs
    client = TamiyoClient(live, token=TOKEN, timeout_s=5.0, retries=3, backoff_s=0.01)
    before = len(counting.calls)
    with pytest.raises(ValueError, match="422.*features must have") as err:
        client.decide(features[0, :5].numpy(), masks[0].numpy())
    assert not isinstance(err.value, TamiyoUnavailable)
    assert counting.calls[before:] == [("POST", "/v1/decide")]
    before = len(counting.calls)
    with pytest.raises(ValueError, match="401"):
        TamiyoClient(live, timeout_s=5.0, retries=3, backoff_s=0.01).decide(features[0].numpy(), masks[0].numpy())
    assert counting.calls[before:] == [("POST", "/v1/decide")]


def test_client_gives_up_with_tamiyo_unavailable_when_nothing_listens(inputs):
    """Connection refused on every attempt → TamiyoUnavailable after retries + 1 attempts, quickly."""
    features, masks = inputs
    client = TamiyoClient(f"http://127.0.0.1:{free_port()}", timeout_s=0.2, retries=1, backoff_s=0.01)
    start = time.monotonic()
    with pytest.raises(TamiyoUnavailable, match="after 2 attempts"):
        client.decide(features[0].numpy(), masks[0].numpy())
    assert time.monotonic() - start < 5


def stub_api(info: dict, answer, status: int = 200) -> Counting:
    """A fake server: GET /v1/policy → `info`, POST /v1/decide → `answer` with `status`."""
    stub = FastAPI()

    @stub.get("/v1/policy")
    async def _policy():
        return info

    @stub.post("/v1/decide")
    async def _decide():
        return JSONResponse(answer, status)

    return Counting(stub)


@pytest.fixture(scope="module")
def policy_info(policy) -> dict:
    return json.loads(json.dumps(policy.describe(), default=str))


def test_client_retries_5xx_then_gives_up(policy_info, inputs):
    """503 answers are retried (retries + 1 requests in all), then TamiyoUnavailable naming the status."""
    features, masks = inputs
    stub = stub_api(policy_info, {"error": "overloaded"}, status=503)
    with live_server(stub, free_port()) as url:
        client = TamiyoClient(url, timeout_s=2.0, retries=2, backoff_s=0.01)
        with pytest.raises(TamiyoUnavailable, match="503"):
            client.decide(features[0].numpy(), masks[0].numpy())
    assert stub.calls == [("POST", "/v1/decide")] * 3


def test_remote_tamiyo_falls_back_while_down_and_uses_the_server_once_back(app, policy):
    """Server down → WAIT fallback (counted); server up → the served greedy action; down and up again likewise."""
    obs = observation()
    expected = greedy_in_process(policy, obs)
    assert expected.op != Op.WAIT, "pick an observation whose served action differs from the fallback"
    port = free_port()
    remote = RemoteTamiyo(TamiyoClient(f"http://127.0.0.1:{port}", token=TOKEN, timeout_s=0.5, retries=1,
                                       backoff_s=0.01), NUM_CLASSES)
    down = remote.decide(obs)
    assert down.action == FactoredAction(Op.WAIT) and "fallback" in down.reason
    assert (remote.asked, remote.answered, remote.fallbacks) == (1, 0, 1)
    with live_server(app, port):
        up = remote.decide(obs)
    assert up.action == expected and policy.version in up.reason
    assert (remote.asked, remote.answered, remote.fallbacks) == (2, 1, 1)
    assert remote.decide(obs).action == FactoredAction(Op.WAIT)
    with live_server(app, port):
        assert remote.decide(obs).action == expected
    assert (remote.asked, remote.answered, remote.fallbacks) == (4, 2, 2)


class FixedController:
    name = "fixed"

    def __init__(self, action: FactoredAction) -> None:
        self.action = action

    def decide(self, obs: Observation) -> Decision:
        return Decision(self.action, "fixed")


ANSWER = {"op": int(Op.ADVANCE), "slot": 0, "blueprint": 0, "blend": 0, "op_name": "ADVANCE"}
SCORES = {"probability": 0.9, "value": 0.0, "policy_version": "stub"}
FORBIDDEN_ANSWERS = {  # well-formed decisions the local masks of a fresh model forbid
    "masked_op": {"action": ANSWER} | SCORES,  # ADVANCE: no slot of a fresh model is advanceable
    "out_of_range_slot": {"action": ANSWER | {"op": int(Op.GERMINATE), "slot": 99}} | SCORES,
    "unknown_op": {"action": ANSWER | {"op": 7}} | SCORES,
}
GARBLED_ANSWERS = {  # 200 answers that are not decisions at all (a proxy, another service, a version skew)
    "missing_action": SCORES,
    "null_action": {"action": None} | SCORES,
    "list_answer": [],
    "string_slot": {"action": ANSWER | {"op": int(Op.GERMINATE), "slot": "0"}} | SCORES,
}


def _assert_falls_back(policy_info: dict, answer) -> None:
    """RemoteTamiyo served `answer` takes its fallback controller's decision (or WAIT without one), counted."""
    obs = observation()
    fallback = FixedController(FactoredAction(Op.GERMINATE, 1, 0, 0))
    assert obs.masks.allows(fallback.action)
    with live_server(stub_api(policy_info, answer), free_port()) as url:
        remote = RemoteTamiyo(TamiyoClient(url, timeout_s=2.0, retries=0), NUM_CLASSES, fallback=fallback)
        d = remote.decide(obs)
        assert d.action == fallback.action and "fallback" in d.reason, d
        assert (remote.asked, remote.answered, remote.fallbacks) == (1, 0, 1)
        plain = RemoteTamiyo(TamiyoClient(url, timeout_s=2.0, retries=0), NUM_CLASSES)
        assert plain.decide(obs).action == FactoredAction(Op.WAIT)


@pytest.mark.parametrize("kind", list(FORBIDDEN_ANSWERS))
def test_remote_tamiyo_never_executes_an_answer_the_local_masks_forbid(policy_info, kind):
    """A served action the local masks forbid (masked op, slot out of range, unknown op) → fallback, not executed."""
    _assert_falls_back(policy_info, FORBIDDEN_ANSWERS[kind])


@pytest.mark.parametrize("kind", list(GARBLED_ANSWERS))
def test_remote_tamiyo_falls_back_on_a_garbled_answer(policy_info, kind):
    """A 200 answer that is not a decision → fallback for this epoch, not an exception that ends the training run."""
    _assert_falls_back(policy_info, GARBLED_ANSWERS[kind])


def test_remote_tamiyo_refuses_a_policy_with_another_action_layout(policy_info):
    """A served policy whose nvec does not fit the plane is never asked to decide: fallback WAIT."""
    obs = observation()
    info = json.loads(json.dumps(policy_info))
    info["action"]["nvec"] = [4, 2, 6, 9]
    good_answer = {"action": {"op": 1, "slot": 0, "blueprint": 0, "blend": 0, "op_name": "GERMINATE"},
                   "probability": 0.9, "value": 0.0, "policy_version": "x"}
    stub = stub_api(info, good_answer)
    with live_server(stub, free_port()) as url:
        remote = RemoteTamiyo(TamiyoClient(url, timeout_s=2.0, retries=0), NUM_CLASSES)
        assert remote.decide(obs).action == FactoredAction(Op.WAIT)
        assert remote.fallbacks == 1 and not remote.checked
    assert ("POST", "/v1/decide") not in stub.calls
