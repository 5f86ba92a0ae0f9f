"""The served Tamiyo on loopback, measured (what experiments/bench_serve.py runs): sequential latency, concurrent
throughput with and without @serve.batch, the batch endpoint, and the in-cluster DeploymentHandle path.

Each ingress runs in a child process of its own with its own local Ray cluster (the ingress is fixed when the
cluster starts), which it stops before exiting. Traffic goes only to the 127.0.0.1 server that child started, and
every phase is bounded in requests.
"""

from __future__ import annotations

import http.client
import json
import logging
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from esper.study.bench import markdown_table

log = logging.getLogger(__name__)
PORT = 8000


@dataclass(frozen=True)
class Load:
    """How hard each ingress is pushed."""

    requests: int = 1000
    """Sequential requests measured (after 50 warm-up)."""
    clients: int = 16
    """Concurrent clients in the throughput phase."""
    batch_rows: int = 256
    """Observations per batch-endpoint request."""
    domains: bool = False
    """Also serve two domains (one core, an adapter each) from one deployment and measure it like the single agent."""


def random_agent(path: Path) -> None:
    """A policy with random weights and the default world's layout (latency does not depend on the weights)."""
    from esper.leyline.features import feature_names, feature_size
    from esper.world import WorldConfig
    from esper.tamiyo.agent_file import save_agent
    from esper.tamiyo.policy import TamiyoPolicyNet
    from esper.tolaria.builder import action_spec

    world = WorldConfig()
    spec = action_spec(world)
    save_agent(path, TamiyoPolicyNet(feature_size(spec), spec.nvec), spec, feature_names(spec),
               config={"world": world.model_dump(mode="json")}, code_version="bench")


def random_core_agents(folder: Path) -> dict[str, Path]:
    """Two core agents on one random core, each with a random adapter: `vision` on the default world's layout (the
    single agent's, so the two servers answer the same requests) and `text` on a character transformer's."""
    import torch

    from esper.leyline.features import feature_names
    from esper.tamiyo.adapter import TamiyoAdapter
    from esper.tamiyo.agent_file import save_agent
    from esper.tamiyo.core import LayoutPolicy, TamiyoCore
    from esper.tolaria.builder import action_spec
    from esper.world import WorldConfig

    text = WorldConfig.model_validate({
        "data": {"task": "char_lm", "source": "corpus.txt", "block_size": 64}, "val_images": None,
        "host": {"name": "transformer", "preset": "custom", "n_layer": 2, "n_head": 2, "n_embd": 64},
        "kasmina": {"blueprints": ["block_copy", "block", "attention_head", "token_mlp", "lora"], "lifecycle": "graft"}})
    core, out = TamiyoCore(128), {}
    for domain, world in (("vision", WorldConfig()), ("text", text)):
        spec, adapter = action_spec(world), TamiyoAdapter(core, domain)
        with torch.no_grad():
            for p in adapter.parameters():
                p.normal_(0.0, 0.02)
        out[domain] = folder / f"{domain}.pt"
        save_agent(out[domain], LayoutPolicy(core, spec, adapter), spec, feature_names(spec),
                   config={"world": world.model_dump(mode="json")}, code_version="bench")
    return out


def observation(agent_path: Path) -> tuple[list[float], list[float]]:
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


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> float:
    t = time.perf_counter()
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise RuntimeError(f"{path}: HTTP {r.status} {data[:200]!r}")
    return time.perf_counter() - t


def sequential(body: bytes, n: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    for _ in range(50):
        _post(conn, "/v1/decide", body)
    ms = sorted(1000 * _post(conn, "/v1/decide", body) for _ in range(n))
    conn.close()
    return {"requests": n, "p50_ms": ms[n // 2], "p90_ms": ms[int(n * 0.9)], "p99_ms": ms[min(n - 1, int(n * 0.99))],
            "mean_ms": statistics.fmean(ms)}


def concurrent(body: bytes, clients: int, per_client: int) -> dict:
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


def batch_endpoint(features: list[float], mask: list[float], rows: int, n: int, domain: str | None = None) -> dict:
    request = {"observations": [{"features": features, "action_mask": mask}] * rows}
    body = json.dumps(request | ({"domain": domain} if domain else {})).encode()
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    _post(conn, "/v1/decide/batch", body)
    seconds = [_post(conn, "/v1/decide/batch", body) for _ in range(n)]
    conn.close()
    return {"rows_per_request": rows, "requests": n, "decisions_per_s": rows * n / sum(seconds),
            "p50_ms": 1000 * statistics.median(seconds)}


def handle(features: list[float], mask: list[float], n: int) -> dict:
    """In-cluster path: a DeploymentHandle call from a driver attached to the cluster (no HTTP)."""
    import numpy as np
    from ray import serve

    from esper.serve.launch import APP_NAME

    app = serve.get_app_handle(APP_NAME)
    row = (np.asarray(features, np.float32), np.asarray(mask, np.float32), False, None)
    for _ in range(20):
        app.decide.remote(row).result()
    ms = []
    for _ in range(n):
        t = time.perf_counter()
        app.decide.remote(row).result()
        ms.append(1000 * (time.perf_counter() - t))
    ms.sort()
    return {"requests": n, "p50_ms": ms[n // 2], "p99_ms": ms[min(n - 1, int(n * 0.99))]}


def measure_ingress(agent: Path, ingress: str, load: Load) -> tuple[dict, list[str]]:
    """One ingress in this process: start a local cluster + Serve (batching on, then off), run every phase, stop
    everything. The results, and the progress lines."""
    import ray

    from esper.runtime import local_ray
    from esper.serve import launch
    from esper.serve.config import ServeConfig

    features, mask = observation(agent)
    body = json.dumps({"features": features, "action_mask": mask}).encode()
    results, lines = {"ingress": ingress}, []
    configs = [("batching", {"agent": agent, "max_batch_size": 32}), ("no_batching", {"agent": agent, "max_batch_size": 1})]
    if load.domains:  # one core, two adapters; requests name the vision domain (the single agent's layout)
        folder = Path(tempfile.mkdtemp(prefix="esper-bench-domains-"))  # the child's own: never beside the user's agent
        configs.append(("domains", {"domains": random_core_agents(folder), "max_batch_size": 32}))
    for key, fields in configs:
        cfg = ServeConfig(port=PORT, ingress=ingress, **fields)
        launch.prepare_environment(cfg)
        local_ray.init(None, num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=launch.runtime_env())
        try:
            launch.start(cfg)
            if key == "domains":
                results["domains"] = _measure_domains(features, mask, load)
                lines.append(f"[{ingress}] two domains, one core: sequential p50 "
                             f"{results['domains']['sequential']['p50_ms']:.2f} ms, batch endpoint "
                             f"{results['domains']['batch_endpoint']['decisions_per_s']:.0f}/s")
                continue
            if key == "batching":
                results["sequential"] = sequential(body, load.requests)
                lines.append(f"[{ingress}] sequential p50 {results['sequential']['p50_ms']:.2f} ms, "
                             f"p99 {results['sequential']['p99_ms']:.2f} ms")
                results["batch_endpoint"] = batch_endpoint(features, mask, load.batch_rows, 40)
                results["handle"] = handle(features, mask, 300)
            results[f"concurrent_{key}"] = concurrent(body, load.clients, max(load.requests // load.clients, 20))
            lines.append(f"[{ingress}] {load.clients} clients, {key}: "
                         f"{results[f'concurrent_{key}']['decisions_per_s']:.0f} decisions/s")
        finally:
            launch.stop()
            ray.shutdown()
    return results, lines


def _measure_domains(features: list[float], mask: list[float], load: Load) -> dict:
    body = json.dumps({"features": features, "action_mask": mask, "domain": "vision"}).encode()
    return {"sequential": sequential(body, load.requests),
            "batch_endpoint": batch_endpoint(features, mask, load.batch_rows, 40, domain="vision")}


def _child(agent: str, ingress: str, load: dict, folder: str) -> None:
    """The child process: its console (Ray's and Serve's lines) goes to folder/console.log, its results to
    folder/result.json."""
    with open(Path(folder) / "console.log", "w") as console:
        os.dup2(console.fileno(), 1)
        os.dup2(console.fileno(), 2)
    results, lines = measure_ingress(Path(agent), ingress, Load(**load))
    (Path(folder) / "result.json").write_text(json.dumps({"results": results, "lines": lines}))


def run_ingress(agent: Path, ingress: str, load: Load, timeout_s: float = 900) -> dict:
    """One ingress in a fresh child process (a cluster's ingress is fixed when it starts); its results. A failed
    child raises RuntimeError with the end of its console."""
    with tempfile.TemporaryDirectory(prefix="esper-bench-serve-") as folder:
        child = multiprocessing.get_context("spawn").Process(target=_child, args=(str(agent), ingress, asdict(load), folder))
        child.start()
        child.join(timeout_s)
        if child.is_alive():
            child.kill()
            child.join()
        result = Path(folder) / "result.json"
        if child.exitcode != 0 or not result.is_file():
            console = Path(folder) / "console.log"
            tail = console.read_text()[-3000:] if console.is_file() else ""
            raise RuntimeError(f"the {ingress} run failed (exit code {child.exitcode}):\n{tail}")
        done = json.loads(result.read_text())
    for line in done["lines"]:
        log.info(line)
    return done["results"]


def table(rows: list[dict]) -> str:
    per_s = lambda r, key: f"{r[key]['decisions_per_s']:.0f}/s"
    domains = [r for r in rows if "domains" in r]
    extra = "" if not domains else "\n\n" + markdown_table(
        ["ingress", "single agent p50", "two domains p50", "ratio", "single agent batch", "two domains batch"],
        [[r["ingress"], f"{r['sequential']['p50_ms']:.2f} ms", f"{r['domains']['sequential']['p50_ms']:.2f} ms",
          f"{r['domains']['sequential']['p50_ms'] / r['sequential']['p50_ms']:.2f}×", per_s(r, "batch_endpoint"),
          per_s(r["domains"], "batch_endpoint")] for r in domains])
    return markdown_table(
        ["ingress", "/v1/decide p50", "p99", "16 clients, batching", "16 clients, no batching", "batch endpoint",
         "handle p50"],
        [[r["ingress"], f"{r['sequential']['p50_ms']:.2f} ms", f"{r['sequential']['p99_ms']:.2f} ms",
          per_s(r, "concurrent_batching"), per_s(r, "concurrent_no_batching"), per_s(r, "batch_endpoint"),
          f"{r['handle']['p50_ms']:.2f} ms"] for r in rows]) + extra
