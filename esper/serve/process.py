"""The serving process (what experiments/serve_tamiyo.py runs): a Ray cluster (a local one by default), the served
Tamiyo on it, and, until a signal, nothing else; then a shutdown that leaves no process of a local cluster behind
(docs/security.md)."""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
from dataclasses import dataclass

from esper.serve import launch
from esper.serve.config import ServeConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cluster:
    """Where to serve: `address` None starts a local cluster (loopback, token auth) that dies with this process."""

    address: str | None = None
    dashboard: bool = True
    """The Ray dashboard of a local cluster, on 127.0.0.1 (its URL is logged)."""
    detach: bool = False
    """Leave the server running on the cluster (`address` required) and return."""


def reload(cfg: ServeConfig, address: str) -> None:
    """Swap the policies of the server running on the cluster at `address` for cfg's agents."""
    import ray

    from esper.runtime import local_ray

    launch.prepare_environment(cfg)
    local_ray.init(address, log_to_driver=False, runtime_env=launch.runtime_env())
    try:
        launch.reload(cfg)
    finally:
        ray.shutdown()


def serve(cfg: ServeConfig, cluster: Cluster, script: str = "experiments/serve_tamiyo.py") -> None:
    """Serve cfg's agents until SIGINT, SIGTERM or SIGHUP (or, detached, return once it is up). Nothing of a local
    cluster outlives this call, also after a failed start (AgentFileError, RuntimeError propagate)."""
    import ray

    from esper.runtime import local_ray

    launch.prepare_environment(cfg)  # a local cluster inherits it; on a real one every node must have it too
    local = cluster.address is None
    haproxy_dir = launch.isolate_local_server() if local and cfg.ingress == "haproxy" else None
    tree = None
    try:
        # a local cluster: loopback only, token auth (docs/security.md); --address: that cluster's token
        context = local_ray.init(cluster.address, include_dashboard=cluster.dashboard if local else None,
                                 log_to_driver=False, runtime_env=launch.runtime_env())
        tree = local_ray.ProcessTree() if local else None
        url = launch.start(cfg)
        if tree is not None:
            tree.refresh()  # Serve's actors and HAProxy exist now
        log.info(f"Tamiyo serving {cfg.agents()} at {url}  (POST {url}/v1/decide; GET {url}/v1/policy)")
        if local:
            address = ray.get_runtime_context().gcs_address
            log.info(f"local Ray cluster {address} (loopback, token in {local_ray.token_source()}); swap the policy "
                     f"with: python {script} --address {address} --reload --agent NEW.pt")
            if cluster.dashboard:
                log.info(local_ray.dashboard_message(context))
        if not cluster.detach:
            graceful = _serve_until_signalled(tree)
            _shut_down(tree, graceful, cleanup=lambda: haproxy_dir and shutil.rmtree(haproxy_dir, ignore_errors=True))
    finally:  # also after a failed start: nothing of the local cluster may outlive us
        if ray.is_initialized():
            _bounded(ray.shutdown, 10)
        if tree is not None:
            tree.reap()
        if haproxy_dir is not None:
            shutil.rmtree(haproxy_dir, ignore_errors=True)


def _serve_until_signalled(tree) -> bool:
    """Block until SIGINT, SIGTERM or SIGHUP, remembering the cluster's processes as workers come and go. True if it
    was SIGINT (Ctrl-C: Ray's own processes ignore it, the cluster is whole and Serve can stop gracefully)."""
    stop = []
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: stop.append(signum))
    ticks = 0
    try:
        while not stop:
            time.sleep(0.5)
            ticks += 1
            if tree is not None and ticks % 4 == 0:
                tree.refresh()
    except KeyboardInterrupt:
        stop.append(signal.SIGINT)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # a second signal must not abort the shutdown half-way
    return stop[0] == signal.SIGINT


def _shut_down(tree, graceful: bool, cleanup) -> None:
    """Ctrl-C: stop Serve gracefully (replicas drain, HAProxy exits), then the cluster. SIGTERM/SIGHUP — from a job
    scheduler, `timeout`, `kill -- -PGID` — may have hit our whole process group, killing the GCS and raylet
    (which share it) while Ray's workers, each in a group of its own, and Serve's HAProxy outlive them holding the
    ports; so a local cluster is stopped process by process first (SIGTERM, then SIGKILL after 5 s), before Ray
    notices its GCS is gone and ends this process."""
    import ray

    log.info("stopping… (a few seconds)")
    if graceful or tree is None:
        stopper = threading.Thread(target=launch.stop, daemon=True)
        stopper.start()
        stopper.join(timeout=30)  # a cluster dying under us must not hang the shutdown
        # Disconnect while the GCS still lives: a driver disconnecting from a cluster already reaped can wait on
        # the dead GCS for minutes (seen late in full test runs: the process outlived its cluster by > 180 s).
        _bounded(ray.shutdown, 30)
    if tree is not None:
        tree.refresh()
        stopped = tree.reap()
        cleanup()
        log.info(f"stopped the local Ray cluster ({stopped} process(es))")
    _bounded(ray.shutdown, 10)  # a no-op once disconnected above; never waits on a dead GCS for long


def _bounded(fn, seconds: float) -> None:
    """Run fn in a daemon thread for at most `seconds` (a shutdown step must not hang the process's exit)."""
    worker = threading.Thread(target=fn, daemon=True)
    worker.start()
    worker.join(timeout=seconds)
