"""Start, reload and stop the served Tamiyo on a Ray cluster (a local one by default)."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

from esper.serve.config import ServeConfig

APP_NAME = "tamiyo"
HAPROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"
DRAIN_ENV = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"


# Serve's fixed defaults that two servers on one machine would share: ports and HAProxy's files in /tmp/haproxy-serve.
_PORT_ENVS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
              "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")
_FILE_ENVS = {"RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg", "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",
              "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": "", "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
              "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": "metrics.sock"}


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def isolate_local_server() -> Path:
    """Give the Serve instance of a local cluster its own free ports for HAProxy's stats and metrics frontends and
    Serve's fallback proxy, and its own folder for HAProxy's config and sockets (Ray's defaults are fixed: 8404,
    9101, 8500 and /tmp/haproxy-serve, so a second server on the machine would collide). Variables the user set
    win. Returns the folder (short, in /tmp: HAProxy's socket paths must stay under ~100 characters); the caller
    removes it."""
    folder = Path(tempfile.mkdtemp(prefix="esper-hap-", dir="/tmp"))
    for name in _PORT_ENVS:
        os.environ.setdefault(name, str(free_loopback_port()))
    for name, file in _FILE_ENVS.items():
        os.environ.setdefault(name, str(folder / file) if file else str(folder))
    return folder


def prepare_environment(cfg: ServeConfig) -> None:
    """Environment a local cluster must start with (call before ray.init; on a real cluster, set it on every node)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ[HAPROXY_ENV] = "1" if cfg.ingress == "haproxy" else "0"
    if cfg.ingress == "haproxy":
        # Behind HAProxy a stopping replica stays open this long so load balancers can deregister it (Ray's
        # default 30 s is for cloud balancers; ours reloads in < 1 s and retries refused connections). It is
        # also how long a reload keeps the old replica and how long `serve.shutdown` takes.
        os.environ.setdefault(DRAIN_ENV, "5")


def runtime_env() -> dict:
    """ray.init's runtime_env for the job that starts Serve: a worker hook that keeps HAProxy's stats and metrics
    frontends, and on a loopback node the replicas' gRPC servers, on 127.0.0.1 (esper.serve.loopback)."""
    from esper.serve.loopback import HOOK

    return {"worker_process_setup_hook": HOOK}


def deployment_for(cfg: ServeConfig):
    """The bound Serve application for `cfg` (the deployment options are all set explicitly)."""
    from ray import serve

    from esper.serve.deployment import TamiyoServer

    deployment = serve.deployment(
        TamiyoServer,
        name="Tamiyo",
        num_replicas=cfg.replicas,
        ray_actor_options={"num_cpus": cfg.cpus_per_replica},
        max_ongoing_requests=cfg.max_ongoing_requests,
        max_queued_requests=cfg.max_queued_requests,
        health_check_period_s=5.0,
        health_check_timeout_s=10.0,
        graceful_shutdown_wait_loop_s=0.5,
        graceful_shutdown_timeout_s=5.0,
        # A reload (new agents, a new adapter) starts the new replicas before the old stop: with Serve's default
        # (0) a one-replica deployment had no replica while the new one started, and requests waiting longer than
        # request_timeout_s for it were answered 408 (seen here with two domains under traffic on a busy machine).
        max_surge_percent=100,
        user_config={"agents": cfg.agents()},
        logging_config={"enable_access_log": False},  # a log line per decision costs more than the decision
    )
    return deployment.bind(cfg.token, cfg.max_body_bytes, cfg.max_batch_size, cfg.batch_wait_timeout_s)


def start(cfg: ServeConfig) -> str:
    """Deploy on the connected Ray cluster (call ray.init first) and return the base URL."""
    from ray import serve

    from esper.serve.domains import ServedDomains

    ServedDomains.load(cfg.agents()).canary()  # fail here, in the caller (AgentFileError, ValueError, RuntimeError)
    if (os.environ.get(HAPROXY_ENV) == "1") != (cfg.ingress == "haproxy"):
        raise RuntimeError(f"ingress {cfg.ingress!r} needs {HAPROXY_ENV}={int(cfg.ingress == 'haproxy')} in the environment "
                           "before the Ray cluster starts (prepare_environment(cfg) before ray.init)")
    serve.start(http_options={"host": cfg.host, "port": cfg.port, "request_timeout_s": cfg.request_timeout_s})
    serve.run(deployment_for(cfg), name=APP_NAME, route_prefix="/", blocking=False)
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    return f"http://{host}:{cfg.port}"


def reload(cfg: ServeConfig) -> None:
    """Hot reload: the same deployment with new agents in user_config; replicas swap policies in place
    (every other field of `cfg` must equal the running one's, or Serve rolls the replicas instead)."""
    from ray import serve

    from esper.serve.domains import ServedDomains

    ServedDomains.load(cfg.agents()).canary()  # refuse a broken set here, before any replica is touched
    serve.run(deployment_for(cfg), name=APP_NAME, route_prefix="/", blocking=False)


def stop() -> None:
    from ray import serve

    serve.shutdown()
