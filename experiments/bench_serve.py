"""Benchmark the served Tamiyo on loopback: latency, concurrent throughput, batch endpoint, in-cluster handle.

    python experiments/bench_serve.py --agent runs/ppo/<run>/agent.pt          # both ingresses, ~3 min
    python experiments/bench_serve.py --ingress proxy --requests 500          # one ingress

Each ingress runs in its own child process with its own local Ray cluster (the ingress is fixed when the
cluster starts), which it stops before exiting. Traffic goes only to 127.0.0.1 servers this script started,
and every phase is bounded in requests. Without --agent a policy with random weights and the smoke world's
layout is served (latency does not depend on the weights). Writes docs/data/bench_serve.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PORT = 8000


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", type=Path, default=None, help="agent.pt to serve (default: random weights, smoke layout)")
    p.add_argument("--ingress", choices=["proxy", "haproxy", "both"], default="both")
    p.add_argument("--requests", type=int, default=1000, help="sequential requests measured (after 50 warm-up)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients in the throughput phase")
    p.add_argument("--batch-rows", type=int, default=256, help="observations per batch-endpoint request")
    p.add_argument("--out", type=Path, default=Path("docs/data/bench_serve.json"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def _observation(agent_path: Path) -> tuple[list[float], list[float]]:
    """A realistic observation: features and mask at the start of an episode of the agent's own world (its
    plane, on a few synthetic images: the layout depends on the host and plane, not on the data)."""
    from esper.world import WorldConfig
    from esper.simic.env import EsperEnv
    from esper.tamiyo.agent_file import load_agent

    world = dict(load_agent(agent_path).provenance.get("config", {}).get("world", {}))
    world.update(data={"source": "synthetic", "limit": 200, "val_fraction": 0.2}, val_images=20, device="cpu")
    env = EsperEnv(WorldConfig.model_validate(world))
    obs, _ = env.reset(seed=0)
    return obs["features"].tolist(), obs["action_mask"].tolist()


def _random_agent(path: Path) -> None:
    from esper.leyline.features import feature_names, feature_size
    from esper.world import WorldConfig
    from esper.tamiyo.agent_file import save_agent
    from esper.tolaria.builder import action_spec
    from esper.tamiyo.policy import TamiyoPolicyNet

    world = WorldConfig()
    spec = action_spec(world)
    save_agent(path, TamiyoPolicyNet(feature_size(spec), spec.nvec), spec, feature_names(spec),
               config={"world": world.model_dump(mode="json")}, code_version="bench")


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> float:
    t = time.perf_counter()
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise RuntimeError(f"{path}: HTTP {r.status} {data[:200]!r}")
    return time.perf_counter() - t


def _sequential(body: bytes, n: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    for _ in range(50):
        _post(conn, "/v1/decide", body)
    ms = sorted(1000 * _post(conn, "/v1/decide", body) for _ in range(n))
    conn.close()
    return {"requests": n, "p50_ms": ms[n // 2], "p90_ms": ms[int(n * 0.9)], "p99_ms": ms[min(n - 1, int(n * 0.99))],
            "mean_ms": statistics.fmean(ms)}


def _concurrent(body: bytes, clients: int, per_client: int) -> dict:
    errors: list[str] = []

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
        try:
            for _ in range(per_client):
                _post(conn, "/v1/decide", body)
        except Exception as exc:  # counted, reported
            errors.append(repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    seconds = time.perf_counter() - t
    done = clients * per_client - len(errors) * per_client
    return {"clients": clients, "requests": clients * per_client, "errors": len(errors), "decisions_per_s": done / seconds}


def _batch_endpoint(features: list[float], mask: list[float], rows: int, n: int) -> dict:
    body = json.dumps({"observations": [{"features": features, "action_mask": mask}] * rows}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    _post(conn, "/v1/decide/batch", body)
    seconds = [_post(conn, "/v1/decide/batch", body) for _ in range(n)]
    conn.close()
    return {"rows_per_request": rows, "requests": n, "decisions_per_s": rows * n / sum(seconds),
            "p50_ms": 1000 * statistics.median(seconds)}


def _handle(features: list[float], mask: list[float], n: int) -> dict:
    """In-cluster path: a DeploymentHandle call from a driver attached to the cluster (no HTTP)."""
    import numpy as np
    from ray import serve

    from esper.serve.launch import APP_NAME

    handle = serve.get_app_handle(APP_NAME)
    row = (np.asarray(features, np.float32), np.asarray(mask, np.float32), False, None)
    for _ in range(20):
        handle.decide_one.remote(row).result()
    ms = []
    for _ in range(n):
        t = time.perf_counter()
        handle.decide_one.remote(row).result()
        ms.append(1000 * (time.perf_counter() - t))
    ms.sort()
    return {"requests": n, "p50_ms": ms[n // 2], "p99_ms": ms[min(n - 1, int(n * 0.99))]}


def _child(args: argparse.Namespace, ingress: str) -> dict:
    """One ingress: start a local cluster + Serve, run every phase, stop everything."""
    from esper.runtime import local_ray
    from esper.serve import launch
    from esper.serve.config import ServeConfig

    features, mask = _observation(args.agent)
    body = json.dumps({"features": features, "action_mask": mask}).encode()
    results = {"ingress": ingress}
    import ray

    for batching in (True, False):  # single decisions merged by @serve.batch, or one pass per request
        cfg = ServeConfig(agent=args.agent, port=PORT, ingress=ingress, max_batch_size=32 if batching else 1)
        launch.prepare_environment(cfg)
        local_ray.init(None, num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=launch.runtime_env())
        try:
            launch.start(cfg)
            key = "batching" if batching else "no_batching"
            if batching:
                results["sequential"] = _sequential(body, args.requests)
                print(f"[{ingress}] sequential p50 {results['sequential']['p50_ms']:.2f} ms, "
                      f"p99 {results['sequential']['p99_ms']:.2f} ms", flush=True)
                results["batch_endpoint"] = _batch_endpoint(features, mask, args.batch_rows, 40)
                results["handle"] = _handle(features, mask, 300)
            results[f"concurrent_{key}"] = _concurrent(body, args.clients, max(args.requests // args.clients, 20))
            print(f"[{ingress}] {args.clients} clients, {key}: "
                  f"{results[f'concurrent_{key}']['decisions_per_s']:.0f} decisions/s", flush=True)
        finally:
            launch.stop()
            ray.shutdown()
    return results


def main() -> None:
    args = _parse()
    if args.child:
        print("RESULT " + json.dumps(_child(args, args.ingress)), flush=True)
        return
    tmp = None
    if args.agent is None:
        tmp = tempfile.TemporaryDirectory()
        args.agent = Path(tmp.name) / "agent.pt"
        _random_agent(args.agent)
    modes = ["proxy", "haproxy"] if args.ingress == "both" else [args.ingress]
    rows = []
    for mode in modes:
        cmd = [sys.executable, __file__, "--child", "--ingress", mode, "--agent", str(args.agent),
               "--requests", str(args.requests), "--clients", str(args.clients), "--batch-rows", str(args.batch_rows)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            sys.exit(f"error: the {mode} run failed:\n{out.stderr[-3000:]}")
        print("\n".join(ln for ln in out.stdout.splitlines() if ln.startswith("[")))
        rows.append(json.loads(lines[-1][len("RESULT "):]))
    from esper.provenance import code_version

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "code_version": code_version(),
                                    "results": rows}, indent=2))
    print(_table(rows) + f"\nwrote {args.out}")


def _table(rows: list[dict]) -> str:
    lines = ["| ingress | /v1/decide p50 | p99 | 16 clients, batching | 16 clients, no batching | batch endpoint | handle p50 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        s = r["sequential"]
        lines.append(f"| {r['ingress']} | {s['p50_ms']:.2f} ms | {s['p99_ms']:.2f} ms | "
                     f"{r['concurrent_batching']['decisions_per_s']:.0f}/s | {r['concurrent_no_batching']['decisions_per_s']:.0f}/s | "
                     f"{r['batch_endpoint']['decisions_per_s']:.0f}/s | {r['handle']['p50_ms']:.2f} ms |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
