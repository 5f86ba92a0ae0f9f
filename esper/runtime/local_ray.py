"""Ray clusters that only this machine's user can reach: loopback binds, token auth on, nothing left running.

Ray 2.60 binds its gRPC servers (GCS, raylet, every worker, the dashboard agent) to all interfaces unless the node's
IP is 127.0.0.1, and `ray.init(_node_ip_address="127.0.0.1")` is rewritten to the machine's routable address. Its
single-machine mode (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, named for the platforms where it is the default) keeps
the node on 127.0.0.1, and with it every listener. Token auth (`RAY_AUTH_MODE=token`) makes a peer that reaches a
port without the token fail with InvalidAuthToken. docs/security.md has the threat model and the measurements.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import stat
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""'0' = Ray's single-machine mode: node IP 127.0.0.1, so every Ray listener binds to loopback."""
AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV, TOKEN_PATH_ENV = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"


def token_path() -> Path:
    """Where Ray reads the cluster token: $RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token (Ray's standard file)."""
    return Path(os.environ.get(TOKEN_PATH_ENV) or Path.home() / ".ray" / "auth_token").expanduser()


def token_source() -> str:
    """Where this process's Ray token comes from, for messages (never the token itself)."""
    return "$" + TOKEN_ENV if os.environ.get(TOKEN_ENV) else str(token_path())


def dashboard_message(context) -> str:
    """The line our scripts print for a local cluster's Ray dashboard (`context`: what ray.init returned)."""
    return f"Ray dashboard: http://{context.dashboard_url}  (on loopback; the page asks for the token in {token_source()})"


def ensure_private_token() -> Path | None:
    """A token file readable by this user only (mode 0600): created with Ray's generator if missing, tightened if
    Ray wrote it world-readable. None when the token comes from $RAY_AUTH_TOKEN (nothing on disk to protect)."""
    if os.environ.get(TOKEN_ENV):
        return None
    path = token_path()
    if not path.exists():
        from ray._private.authentication.authentication_token_generator import generate_new_authentication_token

        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, not even briefly
        with os.fdopen(fd, "w") as f:
            f.write(generate_new_authentication_token())
        logger.info("generated a Ray cluster token in %s (mode 0600)", path)
    elif stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o600)
        logger.warning("%s was readable by other users: now mode 0600", path)
    if not path.read_text().strip():
        raise RuntimeError(f"the Ray token file {path} is empty: delete it and run again (a new one is generated)")
    return path


def _single_machine_mode() -> None:
    """Node IP 127.0.0.1 for this process and the cluster it starts (Ray reads the variable when first imported,
    so a process that already imported ray gets the constant set as well)."""
    os.environ[LOOPBACK_ENV] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


def secure_local_environment() -> None:
    """Set the environment a local cluster must start with (call before ray.init starts one): loopback binds and
    token auth. A RAY_AUTH_MODE=disabled left in the shell is overridden, with a warning: we never start an
    unauthenticated cluster."""
    mode = os.environ.get(AUTH_MODE_ENV, "token")
    if mode.lower() != "token":
        logger.warning("ignoring %s=%s: Esper's local Ray clusters always use token auth", AUTH_MODE_ENV, mode)
    _single_machine_mode()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ensure_private_token()
    _token_mode()


def _token_mode() -> None:
    os.environ[AUTH_MODE_ENV] = "token"
    from ray._raylet import Config

    Config.initialize("")  # Ray caches RAY_AUTH_MODE when first imported: make this process see token mode too


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_address(address: str) -> bool:
    """True for a Ray address 'HOST:PORT' ('[::1]:PORT', or a bare host) on loopback."""
    host = address.split("://", 1)[-1]
    if host.startswith("["):
        host = host[1:host.index("]")]
    elif host.count(":") == 1:
        host = host.split(":")[0]
    return is_loopback_host(host)


def attach_environment(address: str) -> None:
    """Environment for a driver that attaches to `address` ('auto' = the cluster this machine last started): a
    loopback cluster needs the same single-machine mode, or Ray rewrites 127.0.0.1 to a routable address where
    nothing listens. A remote cluster needs only its token (docs/cluster.md), which is presented when there is one."""
    resolved = address
    if address == "auto":
        from ray._private.utils import read_ray_address

        resolved = os.environ.get("RAY_ADDRESS") or read_ray_address() or ""
    if resolved and is_loopback_address(resolved):
        _single_machine_mode()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if AUTH_MODE_ENV not in os.environ and (os.environ.get(TOKEN_ENV) or token_path().is_file()):
        _token_mode()  # a driver does not pick up the token file by itself: present it


def init(address: str | None = None, **kwargs):
    """ray.init: a new local cluster (address None) on loopback with token auth, or attach to `address`. Known
    third-party console noise is dropped here and in every worker (esper.runtime.quiet)."""
    import ray

    from esper.runtime import quiet

    if address is None:
        secure_local_environment()
    else:
        attach_environment(address)
    runtime_env = dict(kwargs.pop("runtime_env", None) or {})
    runtime_env.setdefault("worker_process_setup_hook", quiet.SETUP_HOOK)
    quiet.install()
    context = ray.init(address=address, runtime_env=runtime_env, **kwargs)
    quiet.install()  # ray.init(configure_logging=True) may have replaced the handlers
    return context


class ProcessTree:
    """The processes a local cluster started (the driver's descendants: GCS, raylet, agents, workers and what
    they spawned, e.g. Serve's HAProxy). Ray puts each worker in its own process group, so a signal to the
    driver's group kills the raylet and orphans the workers and their children; `reap()` stops whatever of the
    remembered tree is still alive. Call `refresh()` now and then: workers come and go. `root_pid`: whose
    descendants (default: this process)."""

    def __init__(self, root_pid: int | None = None) -> None:
        import psutil

        self._me = psutil.Process(root_pid)
        self._known: dict[int, float] = {}  # pid -> create_time (a reused pid is not ours)
        self.refresh()

    def refresh(self) -> None:
        import psutil

        for child in self._me.children(recursive=True):
            try:
                self._known.setdefault(child.pid, child.create_time())
            except psutil.NoSuchProcess:
                pass

    def alive(self) -> list:
        import psutil

        procs = []
        for pid, created in self._known.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    procs.append(proc)
            except psutil.NoSuchProcess:
                pass
        return procs

    def reap(self, grace_s: float = 5.0) -> int:
        """SIGTERM every remembered process still alive, SIGKILL what is left after `grace_s`; returns how many."""
        import psutil

        procs = self.alive()
        count = len(procs)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in procs:
                try:
                    proc.send_signal(sig)
                except psutil.NoSuchProcess:
                    pass
            _, procs = psutil.wait_procs(procs, timeout=grace_s)
            if not procs:
                break
        return count

    def describe(self) -> list[str]:
        """'PID NAME' of every remembered process still alive (for messages)."""
        import psutil

        found = []
        for proc in self.alive():
            try:
                found.append(f"{proc.pid} {proc.name()}")
            except psutil.NoSuchProcess:
                pass
        return found

    def names(self) -> set[str]:
        """Process names of the live tree (e.g. {'gcs_server', 'raylet', ...})."""
        return {entry.split(" ", 1)[1] for entry in self.describe()}
