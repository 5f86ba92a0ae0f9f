"""Cluster configs: every YAML in clusters/ passes Ray's own validator and our lint rules; the local fake cluster
autoscales fake GPU nodes for a real (short) ppo_multislot.py run attached with --address auto."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

from _cluster_probe import assert_all_loopback, assert_stranger_refused
from esper.runtime.local_ray import ensure_private_token

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = sorted((ROOT / "clusters").glob("*.yaml"))
PINNED_RAY = re.search(r'"ray\[[^\]]*\]==([0-9.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
SECRET_PATTERNS = [
    re.compile(r"AKIA[0-9A-Z]{16}"),                                   # AWS access key id
    re.compile(r"(?i)(aws_secret_access_key|secret_key|password|api_key)\s*[:=]"),
    re.compile(r"(?i)RAY_AUTH_TOKEN\s*="),                             # a token pasted into a command
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _validated(config: dict) -> dict:
    """What Ray itself does with the file: `ray up` fills defaults (prepare_config) then validates; the fake
    provider's `ray start --autoscaling-config` reads the full file as it is and validates it."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = copy.deepcopy(config)
    if config["provider"]["type"] != "fake_multinode":
        config = prepare_config(config)
    validate_config(config)
    return config


def test_there_are_cluster_configs():
    names = {p.name for p in CLUSTERS}
    assert {"gpu.yaml", "local.yaml"} <= names


@pytest.mark.parametrize("path", CLUSTERS, ids=lambda p: p.name)
def test_cluster_yaml_passes_rays_validator(path):
    config = _validated(_load(path))
    for name, node_type in config["available_node_types"].items():
        assert "resources" in node_type, f"{path.name}: node type {name} must state its resources explicitly"


def test_validator_catches_mistakes():
    """The check above can fail: a misspelt field and a head type that does not exist are both rejected."""
    import jsonschema

    good = _load(ROOT / "clusters" / "gpu.yaml")
    typo = copy.deepcopy(good)
    typo["max_worker"] = typo.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError):
        _validated(typo)
    wrong_head = copy.deepcopy(good)
    wrong_head["head_node_type"] = "nope"
    with pytest.raises(ValueError):
        _validated(wrong_head)


@pytest.mark.parametrize("path", CLUSTERS, ids=lambda p: p.name)
def test_cluster_yaml_follows_our_rules(path):
    text, config = path.read_text(), _load(path)
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "the head must keep no CPU for work (resources: {CPU: 0})"
    assert "0.0.0.0" not in text, "nothing may listen on all interfaces (dashboard-host=127.0.0.1)"
    for pattern in SECRET_PATTERNS:
        assert not pattern.search(text), f"{path.name} looks like it holds a secret ({pattern.pattern})"
    image = config.get("docker", {}).get("image")
    if config["provider"]["type"] == "fake_multinode":
        return
    assert image == f"rayproject/ray:{PINNED_RAY}-py311-gpu", f"image must be the pinned Ray {PINNED_RAY} GPU image"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), f"{key}: token auth on every ray start"
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    gpu_types = [n for n in config["available_node_types"].values() if n["resources"].get("GPU", 0) > 0]
    assert gpu_types and all(n["max_workers"] >= n.get("min_workers", 0) for n in gpu_types)
    assert config["idle_timeout_minutes"] > 0


def test_lint_catches_a_public_dashboard(tmp_path):
    """The rules above can fail: a config with the dashboard on 0.0.0.0 and a CPU head is rejected."""
    bad = (ROOT / "clusters" / "gpu.yaml").read_text().replace("127.0.0.1", "0.0.0.0").replace("{CPU: 0}", "{CPU: 4}")
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    with pytest.raises(AssertionError):
        test_cluster_yaml_follows_our_rules(path)


# --- the local fake cluster, end to end --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _our_processes(marker: str) -> list[int]:
    """Pids of the processes whose command line names our own temp dir: the head's and the fake nodes' Ray
    processes. That is our handle on the cluster — `ray stop` would kill every Ray process on the machine."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:  # exited meanwhile, or not ours to read
            continue
    return pids


def _stop(marker: str, grace_s: float = 10.0, timeout_s: float = 30.0) -> None:
    """SIGTERM everything of ours, wait `grace_s` (as `ray stop --grace-period` does), then SIGKILL what is left
    and wait for it to go."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, timeout_s)):
        for pid in _our_processes(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while _our_processes(marker) and time.monotonic() < deadline:
            time.sleep(0.5)


@pytest.fixture
def fake_cluster(tmp_path):
    """clusters/local.yaml on a free port with its own temp dir; yields the GCS address; stops only what it started."""
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="esfc", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    config = _load(ROOT / "clusters" / "local.yaml")
    config["provider"]["gcs_address"] = f"127.0.0.1:{port}"
    config_path = tmp_path / "local.yaml"
    config_path.write_text(yaml.safe_dump(config))
    # token auth and Ray's single-machine mode (every listener on 127.0.0.1), as clusters/local.yaml says
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_USAGE_STATS_ENABLED": "0",
           "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    env.pop("RAY_ADDRESS", None)
    ensure_private_token()  # ~/.ray/auth_token, mode 0600 (the fake nodes and the job read it there)
    ray_cli = str(Path(sys.executable).parent / "ray")
    try:
        subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--num-cpus=0", "--node-ip-address=127.0.0.1",
                        f"--temp-dir={temp_dir}", f"--autoscaling-config={config_path}", "--include-dashboard=false",
                        "--disable-usage-stats"], env=env, check=True, timeout=180, capture_output=True)
        yield f"127.0.0.1:{port}", temp_dir
    finally:
        _stop(temp_dir)
        assert not _our_processes(temp_dir), "the fake cluster left processes behind"
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ppo_job_autoscales_fake_gpu_nodes(fake_cluster, tmp_path):
    address, _ = fake_cluster
    out = tmp_path / "run"
    env = {**os.environ, "RAY_ADDRESS": address, "RAY_USAGE_STATS_ENABLED": "0"}  # the token from ~/.ray/auth_token
    cmd = [sys.executable, str(ROOT / "experiments" / "ppo_multislot.py"), "--address", "auto", "--num-env-runners", "2",
           "--iterations", "1", "--out", str(out), "--set", "ppo.train_batch_size=16", "--set", "ppo.minibatch_size=8",
           "--set", "ppo.num_epochs=1", "--set", "eval_episodes=0", "--set", "ppo.cluster_wait_s=240",
           "--set", "pretrain=null"]
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "waiting for the autoscaler" in proc.stdout, "the job must have found the head without CPUs and asked to grow"
    summary = json.loads((out / "summary.json").read_text())
    nodes = {n["node_id"]: n["resources"] for n in summary["placement"]["nodes"]}
    gpu_nodes = {nid for nid, res in nodes.items() if res.get("GPU", 0) >= 1}
    assert len(gpu_nodes) == 2, f"the autoscaler should have added two fake GPU nodes: {nodes}"
    runners = summary["placement"]["runners"]
    assert len(runners) == 2
    assert {r["node_id"] for r in runners} == gpu_nodes, "one env runner on each fake GPU node"
    assert all(r["device"] == "cpu" for r in runners), "logical GPUs: the hosts must still train on CPU"
    assert (out / "agent.pt").is_file() and summary["history"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out))  # the run's TensorBoard events, named as Tune trials name theirs
    events.Reload()
    assert {"policy/entropy", "world/rent_lambda"} <= set(events.Tags()["scalars"]), events.Tags()["scalars"]
    head = [psutil.Process(pid) for pid in _our_processes(fake_cluster[1])]
    assert_all_loopback(head)  # the fake cluster, as documented, listens on 127.0.0.1 only
    assert_stranger_refused(address, tmp_path / "stranger-home")
    print(f"fake-cluster job took {time.monotonic() - started:.0f} s")
