"""Fuzzing the served Tamiyo's request schema (hypothesis): no body produces a 5xx, and 200 comes back only for
bodies an independent oracle calls valid, with a finite, legal action."""

from __future__ import annotations

from _serve_support import *  # noqa: F403  (shared imports, helpers and fixtures)


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


