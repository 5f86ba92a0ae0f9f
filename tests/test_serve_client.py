"""ServeConfig refuses exposed tokenless serving; TamiyoClient and RemoteTamiyo against a real loopback server that
goes down and comes back (retries, 4xx not retried, fallback, recovery, masked answers never executed)."""

from __future__ import annotations

from _serve_support import *  # noqa: F403  (shared imports, helpers and fixtures)


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
    # an observation whose served action differs from the fallback (the net is random: search the epochs)
    obs = next((o for o in map(observation, range(16)) if greedy_in_process(policy, o).op != Op.WAIT), None)
    assert obs is not None, "the test policy waits at every epoch: the comparison would be trivial"
    expected = greedy_in_process(policy, obs)
    port = free_port()
    remote = RemoteTamiyo(TamiyoClient(f"http://127.0.0.1:{port}", token=TOKEN, timeout_s=0.5, retries=1,
                                       backoff_s=0.01))
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
        remote = RemoteTamiyo(TamiyoClient(url, timeout_s=2.0, retries=0), fallback=fallback)
        d = remote.decide(obs)
        assert d.action == fallback.action and "fallback" in d.reason, d
        assert (remote.asked, remote.answered, remote.fallbacks) == (1, 0, 1)
        plain = RemoteTamiyo(TamiyoClient(url, timeout_s=2.0, retries=0))
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
        remote = RemoteTamiyo(TamiyoClient(url, timeout_s=2.0, retries=0))
        assert remote.decide(obs).action == FactoredAction(Op.WAIT)
        assert remote.fallbacks == 1 and not remote.checked
    assert ("POST", "/v1/decide") not in stub.calls
