"""The served Tamiyo on its default HTTP front end, HAProxy, through the product path: `serve_tamiyo.py` in its own
process with its own local Ray cluster (token auth, loopback) and a bearer token. Every bad-input case of
test_serve_api gets the same 4xx through HAProxy and the server keeps serving, auth holds, decisions equal the
in-process policy, every port its processes listen on is bound to loopback, the printed --reload command works with
Ray's token auth on, and SIGTERM stops it all. tests/test_security.py covers strangers and group signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import re
import threading
import time
from types import SimpleNamespace

import psutil
import requests

from _serve_support import *  # noqa: F403  (shared imports, helpers and fixtures)

from _cluster_probe import assert_all_loopback, listeners, snapshot, still_alive, tree
from esper.serve.policy import file_digest

SCRIPT = Path(__file__).parents[1] / "experiments" / "serve_tamiyo.py"


@pytest.fixture(scope="module")
def server(agent_path, tmp_path_factory):
    """serve_tamiyo.py --ingress haproxy (the default) on free loopback ports; stopped by its own handle."""
    d = tmp_path_factory.mktemp("haproxy")
    ports = {"app": free_port()}
    # no RAY_* variable: the script itself secures its cluster and gives HAProxy its own ports and files
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {
        "ESPER_TAMIYO_TOKEN": TOKEN, "RAY_USAGE_STATS_ENABLED": "0"}
    log = d / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(SCRIPT), "--agent", str(agent_path), "--port", str(ports["app"])],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "Tamiyo serving" not in log.read_text():
            assert proc.poll() is None, f"serve_tamiyo.py exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no server after 180 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield SimpleNamespace(proc=proc, url=f"http://127.0.0.1:{ports['app']}", ports=ports, log=log, env=env)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the driver and the cluster it started
                proc.wait(timeout=30)


@pytest.fixture(scope="module")
def http(server):
    with requests.Session() as s:
        s.headers.update(AUTH)
        yield server.url, s


def test_every_listener_is_on_loopback(server):
    """Every socket the server's processes listen on — HAProxy's app, stats and metrics frontends (Ray 2.60 would
    bind the latter two to every interface), the replicas' gRPC servers, the cluster's own — is on loopback
    (esper.serve.loopback, esper.runtime.local_ray)."""
    found = assert_all_loopback(tree(server.proc.pid))
    haproxy = {port for _, port, name in found if name == "haproxy"}
    assert server.ports["app"] in haproxy and len(haproxy) >= 3, f"HAProxy's app, stats and metrics ports: {found}"


def test_decisions_through_haproxy_equal_the_in_process_policy(http, policy, inputs):
    """Single and batch decisions through HAProxy → Serve equal the in-process greedy policy."""
    url, s = http
    features, masks = inputs
    with torch.no_grad():
        out = policy.agent.net(features, masks, mode="greedy")
    for i in range(16):
        r = s.post(url + "/v1/decide", json=body(features[i], masks[i]), timeout=10)
        assert r.status_code == 200, r.text
        assert action_of(r.json()) == FactoredAction.from_array(out.actions[i].tolist()), i
    r = s.post(url + "/v1/decide/batch", json={"observations": [body(f, m) for f, m in zip(features, masks)]}, timeout=10)
    assert r.status_code == 200, r.text
    assert [list(action_of(d).as_array()) for d in r.json()["decisions"]] == out.actions.tolist()


@pytest.mark.parametrize("name", list(RAW_CASES) + JSON_CASE_NAMES)
def test_every_bad_input_is_the_same_4xx_through_haproxy(http, good, spec, name):
    """The bad-body table of test_serve_api, sent through HAProxy: the same status and readable error, then a good
    request is still answered."""
    url, s = http
    if name in RAW_CASES:
        raw, status, fragment = RAW_CASES[name]
    else:
        payload, status, fragment = json_cases(good, spec)[name]
        raw = json.dumps(payload).encode()
    assert_error_body(s.post(url + "/v1/decide", data=raw, headers=JSON_CT, timeout=10), status, fragment)
    assert s.post(url + "/v1/decide", json=good, timeout=10).status_code == 200


def test_limits_routes_and_auth_hold_through_haproxy(http, good):
    """413 for a body over the 4 MiB default, 404/405 for routes, 401 without the token, /healthz open."""
    url, s = http
    huge = json.dumps(good | {"features": good["features"] * 4_000}).encode()
    assert len(huge) > ServeConfig.model_fields["max_body_bytes"].default
    assert_error_body(s.post(url + "/v1/decide", data=huge, headers=JSON_CT, timeout=30), 413, "larger than")
    assert_error_body(s.get(url + "/v2/nothing", timeout=10), 404)
    assert_error_body(s.put(url + "/v1/decide", timeout=10), 405)
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789abc"}):
        r = requests.post(url + "/v1/decide", json=good, headers=headers, timeout=10)
        assert_error_body(r, 401, "bearer")
    assert requests.get(url + "/healthz", timeout=10).status_code == 200
    assert s.post(url + "/v1/decide", json=good, timeout=10).status_code == 200


def test_loopback_template_rewrites_both_wildcard_binds_and_refuses_an_unknown_template():
    """The hook's rewrite on Ray's real template leaves no wildcard bind; a template without them is refused."""
    from ray.serve._private.haproxy_templates import HAPROXY_CONFIG_TEMPLATE

    from esper.serve.loopback import loopback_template

    patched = loopback_template(HAPROXY_CONFIG_TEMPLATE)
    binds = [line.strip() for line in patched.splitlines() if line.strip().startswith("bind ")]
    assert "bind 127.0.0.1:{{ config.stats_port }}" in binds and "bind 127.0.0.1:{{ config.metrics_port }}" in binds
    assert not [b for b in binds if b.startswith(("bind *:", "bind :"))], binds
    assert loopback_template(patched) == patched  # idempotent: a worker that runs the hook twice is fine
    with pytest.raises(RuntimeError, match="binds differently"):
        loopback_template("global\n    maxconn 10\n")


def test_loopback_binder_moves_only_the_replicas_wildcard_bind_and_is_idempotent():
    from esper.serve.loopback import loopback_binder

    calls = []
    bind = loopback_binder(lambda server, address: calls.append(address))
    bind(None, "[::]:0")
    bind(None, "10.0.0.5:9000")  # an explicit address is left alone
    assert calls == ["127.0.0.1:0", "10.0.0.5:9000"]
    assert loopback_binder(bind) is bind  # a worker that runs the hook twice wraps once


def test_hot_reload_through_haproxy_drops_no_request(server, http, spec, good, tmp_path):
    """`serve_tamiyo.py --address … --reload` (the command the server prints) swaps the policy while a client keeps
    sending: every request is answered 200, and /healthz then names the new policy."""
    url, s = http
    new = tmp_path / "b.pt"
    save_agent(new, sharp_net(spec, seed=7), spec, feature_names(spec), config={"world": {"name": "test"}}, code_version="t")
    address = re.search(r"local Ray cluster (\S+) ", server.log.read_text()).group(1)
    statuses, stop = [], threading.Event()

    def traffic() -> None:
        with requests.Session() as c:
            c.headers.update(AUTH)
            while not stop.is_set():
                try:
                    statuses.append(c.post(url + "/v1/decide", json=good, timeout=10).status_code)
                except requests.RequestException as exc:
                    statuses.append(repr(exc))
                time.sleep(0.01)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        done = subprocess.run([sys.executable, str(SCRIPT), "--address", address, "--reload", "--agent", str(new)],
                              env=server.env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        deadline = time.monotonic() + 90
        while requests.get(url + "/healthz", timeout=10).json()["policy_version"] != file_digest(new):
            assert time.monotonic() < deadline, "the new policy never answered"
            time.sleep(0.5)
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert len(statuses) > 20 and set(statuses) == {200}, [x for x in statuses if x != 200][:5]


def test_sigterm_stops_the_server_and_frees_every_port(server):
    """Last in this module: SIGTERM → serve_tamiyo.py stops Serve and its cluster and exits 0; nothing of it is
    left running and nothing listens on any of its ports."""
    known = snapshot(server.proc.pid)
    ports = {port for _, port, _ in listeners(tree(server.proc.pid))}
    server.proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    assert server.proc.wait(timeout=60) == 0, server.log.read_text()[-3000:]
    while (still_alive(known) or _bound(ports)) and time.monotonic() < t0 + 30:
        time.sleep(0.5)
    assert not still_alive(known), still_alive(known)
    assert not _bound(ports), _bound(ports)


def _bound(ports: set[int]) -> set[int]:
    """Which of `ports` some process on this machine still listens on."""
    return {c.laddr.port for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port in ports}
