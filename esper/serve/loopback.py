"""Keep Serve's listeners on loopback when its cluster is: a Ray worker setup hook for the job that starts Serve.

Ray 2.60 renders HAProxy's stats page and Prometheus frontend with `bind *:8404` and `bind :9101` (all
interfaces, no setting), and every Serve replica opens its inter-deployment gRPC server on `[::]:0` (hard-coded).
The hook rewrites the two HAProxy binds to 127.0.0.1 always, and the replica's bind to 127.0.0.1 when the node
itself is on loopback (a local cluster, esper.runtime.local_ray); on a real multi-node cluster replicas must stay
reachable from the other nodes, where Ray's token auth guards that port (docs/security.md)."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

HOOK = "esper.serve.loopback.keep_serve_on_loopback"
"""Pass as runtime_env={"worker_process_setup_hook": HOOK} to the ray.init that starts the cluster."""
_WILDCARD_BINDS = {
    "bind :{{ config.metrics_port }}": "bind 127.0.0.1:{{ config.metrics_port }}",
    "bind *:{{ config.stats_port }}": "bind 127.0.0.1:{{ config.stats_port }}",
}
_REPLICA_WILDCARD = "[::]:0"


def loopback_template(template: str) -> str:
    """The template with its wildcard binds on 127.0.0.1; RuntimeError if Ray's template no longer has them
    (another Ray version: check its binds before trusting the HAProxy ingress)."""
    for wildcard, loopback in _WILDCARD_BINDS.items():
        if wildcard not in template and loopback not in template:
            raise RuntimeError(f"Serve's HAProxy template has no {wildcard!r}: this Ray version binds differently")
        template = template.replace(wildcard, loopback)
    return template


def loopback_binder(add_port):
    """`add_port(server, address)` with the replica's wildcard address replaced by 127.0.0.1:0."""
    if getattr(add_port, "_esper_loopback", False):
        return add_port

    def add_port_on_loopback(server, address: str, *args, **kwargs):
        return add_port(server, "127.0.0.1:0" if address == _REPLICA_WILDCARD else address, *args, **kwargs)

    add_port_on_loopback._esper_loopback = True
    return add_port_on_loopback


def _patch_haproxy(haproxy) -> None:
    haproxy.HAPROXY_CONFIG_TEMPLATE = loopback_template(haproxy.HAPROXY_CONFIG_TEMPLATE)


def _patch_replica(replica) -> None:
    import ray

    from esper.runtime.local_ray import is_loopback_host

    if not is_loopback_host(ray.util.get_node_ip_address()):
        return  # a real cluster: replicas must be reachable from the other nodes
    if not hasattr(replica, "add_port_to_grpc_server"):
        raise RuntimeError("Serve's replica no longer binds through add_port_to_grpc_server: check its binds")
    replica.add_port_to_grpc_server = loopback_binder(replica.add_port_to_grpc_server)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs `patch(module)` right after `name` is first imported: most workers never import Serve, and importing it
    in every worker up front would cost each of them ≈ 0.8 s."""

    def __init__(self, name: str, patch) -> None:
        self.name, self.patch = name, patch

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        run_module = spec.loader.exec_module

        def exec_then_patch(module):
            run_module(module)
            self.patch(module)

        spec.loader.exec_module = exec_then_patch
        return spec


def keep_serve_on_loopback() -> None:
    """The worker setup hook: patch Serve's modules now if loaded, else the moment they are imported."""
    for name, patch in (("ray.serve._private.haproxy", _patch_haproxy), ("ray.serve._private.replica", _patch_replica)):
        if name in sys.modules:
            patch(sys.modules[name])
        else:
            sys.meta_path.insert(0, _AfterImport(name, patch))
