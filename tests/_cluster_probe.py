"""Probes for the Ray clusters our entry points start: which sockets their processes listen on, whether a stranger
on this machine can run code on them, and whether anything of theirs is left after they stop. Traffic goes to
127.0.0.1 only."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from esper.runtime.local_ray import LOOPBACK_ENV, ProcessTree

# The stranger: a fresh interpreter with an empty HOME (no ~/.ray/auth_token) and no RAY_* variable but two that
# are not credentials: Ray's single-machine switch (without it a client rewrites 127.0.0.1 to the machine's routable
# address, where nothing of ours listens, and fails to connect whether or not auth is on — a test that cannot fail)
# and one connection attempt instead of ~20 one-second retries (an impatient attacker; the answer is the same).
STRANGER = """
import sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
print("RAN", ray.get(ray.remote(lambda: 6 * 7).remote()))
"""


def tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (Ray's GCS, raylet, agents, workers and what they spawned)."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def snapshot(pid: int) -> ProcessTree:
    """The descendants of `pid` alive now, remembered by pid and start time (a reused pid is not theirs)."""
    return ProcessTree(pid)


def still_alive(known: ProcessTree) -> list[str]:
    """'PID NAME' of the remembered processes still alive."""
    return known.describe()


def wait_for_gcs(pid: int, timeout_s: float = 180.0) -> str:
    """The address of the GCS that process `pid` started: its gcs_server child's listening port (Ray passes port 0
    and lets the kernel choose), on loopback."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        gcs = [p for p in tree(pid)[1:] if _name(p) == "gcs_server"]
        ports = sorted({port for _, port, _ in listeners(gcs)})
        if ports:
            return f"127.0.0.1:{ports[0]}"
        assert psutil.pid_exists(pid), "the entry point exited before its cluster started"
        time.sleep(0.5)
    raise AssertionError(f"no listening gcs_server under pid {pid} after {timeout_s} s")


def _name(proc: psutil.Process) -> str | None:
    try:
        return proc.name()
    except psutil.NoSuchProcess:
        return None


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def listeners(procs: list[psutil.Process]) -> list[tuple[str, int, str]]:
    """(ip, port, process name) of every TCP socket the processes listen on, from the kernel's socket table."""
    names = {}
    for proc in procs:
        try:
            names[proc.pid] = proc.name()
        except psutil.NoSuchProcess:
            pass
    return [(c.laddr.ip, c.laddr.port, names[c.pid]) for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.pid in names]


def assert_all_loopback(procs: list[psutil.Process]) -> list[tuple[str, int, str]]:
    found = listeners(procs)
    assert found, "no listening socket found: is this the cluster's process tree?"
    wide = [f"{ip}:{port} ({name})" for ip, port, name in found if not _is_loopback(ip)]
    assert not wide, f"listening beyond loopback: {wide}"
    return found


def assert_stranger_refused(address: str, home: Path) -> None:
    """A stranger without the token tries to run a task on `address`: it must fail, on authentication."""
    home.mkdir(parents=True, exist_ok=True)
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), LOOPBACK_ENV: "0",
           "RAY_gcs_server_port_wait_time_s": "1"}
    try:
        r = subprocess.run([sys.executable, "-c", STRANGER, address], env=env, capture_output=True, text=True,
                           timeout=120)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the stranger neither ran nor was refused in 120 s: {exc.stderr!r:.2000}") from None
    assert "RAN" not in r.stdout and r.returncode != 0, f"a stranger ran code on {address}: {r.stdout}"
    assert "InvalidAuthToken" in r.stderr, f"refused, but not by token auth:\n{r.stderr[-2000:]}"


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 90.0) -> list[str]:
    """Send `sig` to the process group of `proc` (started with start_new_session=True); wait for the whole tree to
    end. Returns what was still alive after `timeout_s` (then killed, so the test leaves nothing either way)."""
    known = snapshot(proc.pid) if proc.poll() is None else None
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout_s
    while (proc.poll() is None or (known and still_alive(known))) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = still_alive(known) if known else []
    for entry in left:
        try:
            os.kill(int(entry.split()[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        left.append(f"{proc.pid} (the entry point itself)")
    return left
