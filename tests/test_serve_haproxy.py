"""The served Tamiyo on its default HTTP front end, HAProxy, through the product path: `serve_tamiyo.py` in its own
process with its own local Ray cluster, a bearer token and loopback ports the test picked. Every bad-input case of
test_serve_api gets the same 4xx through HAProxy and the server keeps serving, auth holds, decisions equal the
in-process policy, every port HAProxy listens on is bound to 127.0.0.1, and SIGTERM stops it all."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import re
import tempfile
import threading
import time
from types import SimpleNamespace

import requests

from _serve_support import *  # noqa: F403  (shared imports, helpers and fixtures)

from esper.serve.policy import file_digest

SCRIPT = Path(__file__).parents[1] / "experiments" / "serve_tamiyo.py"
LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp*


def listeners(port: int) -> list[str]:
    """Local addresses (hex, as the kernel writes them) of every TCP socket listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, hex_port = local.rsplit(":", 1)
            if state == LISTEN and int(hex_port, 16) == port:
                found.append(address)
    return found


def is_loopback_hex(address: str) -> bool:
    if len(address) == 8:  # IPv4, little-endian: 127.x.x.x ends in 7F
        return address.endswith("7F")
    return address == "0" * 24 + "01000000"  # ::1


@pytest.fixture(scope="module")
def server(agent_path, tmp_path_factory):
    """serve_tamiyo.py --ingress haproxy (the default) on free loopback ports; stopped by its own handle."""
    d = tmp_path_factory.mktemp("haproxy")
    short = Path(tempfile.mkdtemp(prefix="esper-hap-", dir="/tmp"))  # HAProxy's socket path must stay ≤ 97 chars
    ports = {"app": free_port(), "stats": free_port(), "metrics": free_port()}
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {
        "ESPER_TAMIYO_TOKEN": TOKEN, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(ports["stats"]), "RAY_SERVE_HAPROXY_METRICS_PORT": str(ports["metrics"]),
        # HAProxy's files in our temp dir, not the shared /tmp/haproxy-serve
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(short / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(short / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(short), "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(short / "state"),
    }
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
        shutil.rmtree(short, ignore_errors=True)


@pytest.fixture(scope="module")
def http(server):
    with requests.Session() as s:
        s.headers.update(AUTH)
        yield server.url, s


def test_haproxy_listens_on_loopback_only(server):
    """The app port, HAProxy's stats page and its metrics frontend are all bound to 127.0.0.1 (Ray 2.60 would bind
    the latter two to every interface; esper.serve.haproxy_loopback rewrites them)."""
    for name, port in server.ports.items():
        bound = listeners(port)
        assert bound, f"nothing listens on the {name} port {port}: is HAProxy the front end?"
        assert all(is_loopback_hex(a) for a in bound), f"{name} port {port} bound to {bound}"


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

    from esper.serve.haproxy_loopback import loopback_template

    patched = loopback_template(HAPROXY_CONFIG_TEMPLATE)
    binds = [line.strip() for line in patched.splitlines() if line.strip().startswith("bind ")]
    assert "bind 127.0.0.1:{{ config.stats_port }}" in binds and "bind 127.0.0.1:{{ config.metrics_port }}" in binds
    assert not [b for b in binds if b.startswith(("bind *:", "bind :"))], binds
    assert loopback_template(patched) == patched  # idempotent: a worker that runs the hook twice is fine
    with pytest.raises(RuntimeError, match="binds differently"):
        loopback_template("global\n    maxconn 10\n")


def test_hot_reload_through_haproxy_drops_no_request(server, http, spec, good, tmp_path):
    """`serve_tamiyo.py --address … --reload` (the command the server prints) swaps the policy while a client keeps
    sending: every request is answered 200, and /healthz then names the new policy."""
    url, s = http
    new = tmp_path / "b.pt"
    save_agent(new, sharp_net(spec, seed=7), spec, feature_names(spec), config={"world": {"name": "test"}}, code_version="t")
    address = re.search(r"local Ray cluster (\S+);", server.log.read_text()).group(1)
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
    """Last in this module: SIGTERM → serve_tamiyo.py shuts Serve and its cluster down and exits 0; nothing listens."""
    server.proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    assert server.proc.wait(timeout=60) == 0, server.log.read_text()[-3000:]
    ports = server.ports.values()
    while any(listeners(p) for p in ports) and time.monotonic() < t0 + 30:
        time.sleep(0.5)
    assert not any(listeners(p) for p in ports), {n: listeners(p) for n, p in server.ports.items()}
