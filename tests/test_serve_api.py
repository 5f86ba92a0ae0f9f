"""The served Tamiyo's HTTP API without Ray: answers equal the in-process policy, every client mistake is a readable
4xx (never a 500) and the app keeps serving, and the policy identity is its content hash."""

from __future__ import annotations

from _serve_support import *  # noqa: F403  (shared imports, helpers and fixtures)

from esper.serve.policy import sound_masks


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


@pytest.mark.parametrize("name", list(RAW_CASES))
def test_malformed_raw_bodies_get_a_readable_4xx_and_the_app_keeps_serving(client, good, name):
    """Unparseable, non-finite, non-object and absurdly nested bodies: a JSON 4xx, never a 500."""
    raw, status, fragment = RAW_CASES[name]
    r = client.post("/v1/decide", content=raw, headers=JSON_CT)
    assert_error_body(r, status, fragment)
    still_serving(client, good)


def test_json_case_table_is_complete(good, spec):
    """Every bad-JSON case is parametrised (guards the hand-written id list against drift)."""
    assert sorted(json_cases(good, spec)) == sorted(JSON_CASE_NAMES)


@pytest.mark.parametrize("name", JSON_CASE_NAMES)
def test_bad_observations_get_422_with_a_readable_error_and_the_app_keeps_serving(client, good, spec, name):
    """Wrong sizes, types, extra fields, bad seeds and unusable masks: 422 {"error": ...}, then a good request works."""
    payload, status, fragment = json_cases(good, spec)[name]
    r = client.post("/v1/decide", json=payload)
    assert_error_body(r, status, fragment)
    still_serving(client, good)


def test_valid_realistic_mask_variant_is_accepted(client, good, spec):
    """Control for the mask cases: the unedited mask, re-flattened by the same helper, is answered 200."""
    r = client.post("/v1/decide", json=mask_variant(good, spec, lambda m: None))
    assert r.status_code == 200, r.text


def test_bad_row_in_a_batch_is_named_by_its_index(client, good):
    """A batch with one bad observation is refused with 422 naming observations[i]."""
    bad = good | {"features": good["features"][:3]}
    r = client.post("/v1/decide/batch", json={"observations": [good, good, good, bad, good]})
    assert_error_body(r, 422, "observations[3]")
    still_serving(client, good)


PREPARE_CASE_NAMES = ["wrong_feature_length", "too_many_features", "wrong_mask_length", "half_mask_value",
                      "mask_value_two", "negative_mask_value", "all_zero_mask", "mask_forbids_wait", "op_without_slot",
                      "wait_without_slot", "germinate_without_blueprint", "no_blend_choice"]


@pytest.mark.parametrize("name", PREPARE_CASE_NAMES)
def test_batch_checked_as_a_whole_names_its_first_bad_row_as_the_single_endpoint_would(client, good, spec, name):
    """A batch is checked all at once, yet each bad observation is refused in /v1/decide's words, first one named."""
    payload, status, fragment = json_cases(good, spec)[name]
    r = client.post("/v1/decide/batch", json={"observations": [good, good, payload, good, payload]})
    assert_error_body(r, status, fragment)
    assert r.json()["error"].startswith("observations[2]: "), r.json()
    still_serving(client, good)


def test_whole_batch_mask_check_accepts_exactly_what_check_mask_accepts(policy):
    """sound_masks agrees with check_mask row for row: realistic masks, and the same with bits flipped, an entry
    made non-binary or the blend head emptied (every refusal reason occurs)."""
    rng = np.random.default_rng(0)
    rows = np.repeat(np.stack(legal_walk_masks()), 50, axis=0)
    flip = rng.random(rows.shape) < rng.choice([0.0, 0.02, 0.1, 0.5], size=(len(rows), 1))
    rows = np.where(flip, 1.0 - rows, rows).astype(np.float32)
    rows[rng.random(len(rows)) < 0.05, 0] = 0.5
    rows[rng.random(len(rows)) < 0.2, -policy.agent.spec.nvec[3]:] = 0.0  # no blend schedule
    words = ("0 or 1", "allow WAIT", "no slot", "no blueprint", "no blend")  # one per refusal reason of check_mask
    reasons = []
    for flat in rows:
        try:
            check_mask(policy.agent, flat)
            reasons.append(None)
        except BadObservation as exc:
            reasons.append(next(w for w in words if w in str(exc)))
    assert list(sound_masks(policy.agent.spec, rows)) == [r is None for r in reasons]
    assert len(set(reasons)) == 6, set(reasons)  # accepted, and each refusal reason


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
    assert r.json() == {"status": "ok", "policy_version": policy.version, "domains": {"default": policy.version}}


def test_no_token_configured_means_no_auth(policy, good):
    """guarded(..., token=None): decisions need no Authorization header."""
    c = TestClient(guarded(build_api(InProcessBackend(policy)), None, MAX_BODY), raise_server_exceptions=False)
    assert c.post("/v1/decide", json=good).status_code == 200


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
    assert info["action"]["ops"] == ["WAIT", "GERMINATE", "ADVANCE", "CULL"]  # the agent's layout has no audits
    assert "config" not in info["provenance"]  # training config is not exposed
    assert info["file"] == agent_path.name
    # no server path anywhere in the answer: neither the agent's folder nor any absolute path
    assert str(agent_path.parent) not in r.text and "path" not in info, info.keys()


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


