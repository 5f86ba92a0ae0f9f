"""Keep Serve's HAProxy ingress on loopback: Ray 2.60 renders its stats page and Prometheus frontend with
`bind *:8404` and `bind :9101` (all interfaces, no setting). This Ray worker setup hook rewrites those two
binds in Serve's template to 127.0.0.1 before the proxy actor renders it."""

from __future__ import annotations

HOOK = "esper.serve.haproxy_loopback.bind_haproxy_to_loopback"
"""Pass as runtime_env={"worker_process_setup_hook": HOOK} to the ray.init that starts the cluster."""
_WILDCARD_BINDS = {
    "bind :{{ config.metrics_port }}": "bind 127.0.0.1:{{ config.metrics_port }}",
    "bind *:{{ config.stats_port }}": "bind 127.0.0.1:{{ config.stats_port }}",
}


def loopback_template(template: str) -> str:
    """The template with its wildcard binds on 127.0.0.1; RuntimeError if Ray's template no longer has them
    (another Ray version: check its binds before trusting the HAProxy ingress)."""
    for wildcard, loopback in _WILDCARD_BINDS.items():
        if wildcard not in template and loopback not in template:
            raise RuntimeError(f"Serve's HAProxy template has no {wildcard!r}: this Ray version binds differently")
        template = template.replace(wildcard, loopback)
    return template


def bind_haproxy_to_loopback() -> None:
    from ray.serve._private import haproxy

    haproxy.HAPROXY_CONFIG_TEMPLATE = loopback_template(haproxy.HAPROXY_CONFIG_TEMPLATE)
