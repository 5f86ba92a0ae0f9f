"""Serve a trained Tamiyo (agent.pt) over HTTP with Ray Serve.

    python experiments/serve_tamiyo.py --agent runs/ppo/<run>/agent.pt            # http://127.0.0.1:8000, Ctrl-C stops
    python experiments/serve_tamiyo.py --agent A.pt --address auto                # on a running Ray cluster
    ESPER_TAMIYO_TOKEN=$(openssl rand -hex 24) \\
      python experiments/serve_tamiyo.py --agent A.pt --host 0.0.0.0              # exposed: a token is required
    python experiments/serve_tamiyo.py --agent B.pt --address auto --reload      # hot-swap the running server's policy

Routes (docs/api.md): POST /v1/decide, POST /v1/decide/batch, GET /v1/policy, GET /healthz.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", type=Path, required=True, help="agent.pt to serve")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s; non-loopback needs a token)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", default=os.environ.get("ESPER_TAMIYO_TOKEN"),
                   help="bearer token (default: $ESPER_TAMIYO_TOKEN; prefer the variable: flags show up in `ps`)")
    p.add_argument("--ingress", choices=["proxy", "haproxy"], default="haproxy",
                   help="HTTP front end: HAProxy (default; ≈ 2–4 ms a decision) or Serve's Python proxy (≈ 10 ms); "
                        "docs/api.md")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--max-batch-size", type=int, default=32, help="@serve.batch size for single decisions")
    p.add_argument("--address", default=None, help="Ray cluster address ('auto' = the running one); default: start a local one")
    p.add_argument("--reload", action="store_true", help="swap the agent of the server already running on --address")
    p.add_argument("--detach", action="store_true", help="leave the server running on the cluster and exit")
    p.add_argument("--no-ray-dashboard", dest="ray_dashboard", action="store_false",
                   help="do not start the Ray dashboard (default: on 127.0.0.1 for a local cluster; URL printed)")
    return p.parse_args()


def main() -> None:
    args = _parse()
    from pydantic import ValidationError

    from esper.serve.config import ServeConfig
    from esper.tamiyo.agent_file import AgentFileError

    try:
        cfg = ServeConfig(agent=args.agent, host=args.host, port=args.port, token=args.token, ingress=args.ingress, replicas=args.replicas,
                          max_batch_size=args.max_batch_size)
    except ValidationError as exc:
        sys.exit("error: " + "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()))
    from esper.serve.policy import ServedPolicy

    try:
        ServedPolicy(cfg.agent).canary()  # a bad file fails in a second, before any cluster starts
    except (AgentFileError, RuntimeError) as exc:
        sys.exit(f"error: {exc}")
    if (args.reload or args.detach) and args.address is None:
        sys.exit("error: --reload and --detach need --address of a running cluster (a local one dies with this process)")
    from esper.runtime import local_ray
    from esper.serve import launch

    launch.prepare_environment(cfg)  # a local cluster inherits it; on a real one every node must have it too
    local = args.address is None
    haproxy_dir = launch.isolate_local_server() if local and cfg.ingress == "haproxy" else None
    import ray

    tree = None
    try:
        # a local cluster: loopback only, token auth (docs/security.md); --address: that cluster's token
        context = local_ray.init(args.address, include_dashboard=args.ray_dashboard if local else None,
                                 log_to_driver=False, runtime_env=launch.runtime_env())
        tree = local_ray.ProcessTree() if local else None
        try:
            if args.reload:
                launch.reload(cfg)
                print(f"reloaded {cfg.agent}")
                return
            url = launch.start(cfg)
            if tree is not None:
                tree.refresh()  # Serve's actors and HAProxy exist now
        except (AgentFileError, RuntimeError) as exc:
            sys.exit(f"error: {exc}")
        print(f"Tamiyo serving {cfg.agent} at {url}  (POST {url}/v1/decide; GET {url}/v1/policy)", flush=True)
        if local:
            address = ray.get_runtime_context().gcs_address
            print(f"local Ray cluster {address} (loopback, token in {local_ray.token_source()}); swap the policy with: "
                  f"python experiments/serve_tamiyo.py --address {address} --reload --agent NEW.pt", flush=True)
            if args.ray_dashboard:
                print(local_ray.dashboard_message(context), flush=True)
        if not args.detach:
            graceful = _serve_until_signalled(tree)
            _shut_down(tree, graceful, cleanup=lambda: haproxy_dir and shutil.rmtree(haproxy_dir, ignore_errors=True))
    finally:  # also after a failed start: nothing of the local cluster may outlive us
        if ray.is_initialized():
            ray.shutdown()
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
    import threading

    import ray

    from esper.serve import launch

    print("stopping… (a few seconds)", flush=True)
    if graceful or tree is None:
        stopper = threading.Thread(target=launch.stop, daemon=True)
        stopper.start()
        stopper.join(timeout=30)  # a cluster dying under us must not hang the shutdown
    if tree is not None:
        tree.refresh()
        stopped = tree.reap()
        cleanup()
        print(f"stopped the local Ray cluster ({stopped} process(es))", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
