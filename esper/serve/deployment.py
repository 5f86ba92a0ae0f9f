"""The Ray Serve deployment: one replica = the served domains' policies (one core, an adapter per domain, or one
agent) behind the guarded FastAPI app.

Single decisions are merged by `@serve.batch` into one policy pass per domain. The agents arrive as Serve's
user_config and are loaded in `reconfigure`: re-running `serve.run` with new agents (launch.reload) rolls the
replica — the new one starts before the old one stops (`max_surge_percent`), so no request is refused — and a
config-file deploy (`serve deploy`) applies them in place; requests already holding an old policy finish on it. (Serve's model multiplexing routes by a header and evicts by LRU, for many
large models; here every domain is a few-KB adapter on one core, all held at once.)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from ray import serve

from esper.serve.api import build_api, guarded
from esper.serve.domains import ServedDomains, decide_grouped
from esper.serve.policy import Choice, ServedPolicy, file_digest

log = logging.getLogger("ray.serve")


def _same_interfaces(old: ServedDomains, new: ServedDomains) -> list[str]:
    """Domains served before and after whose observation/action layout changed (a client would break)."""
    same = lambda a, b: a.agent.feature_names == b.agent.feature_names and a.agent.spec.to_dict() == b.agent.spec.to_dict()
    return [name for name in old.policies.keys() & new.policies.keys() if not same(old.policies[name], new.policies[name])]


def agents_of(user_config: dict | None) -> dict[str, str]:
    """{domain: agent path} from Serve's user_config ({"agents": {...}}; {"agent": path} = one, its own domain)."""
    cfg = user_config or {}
    return dict(cfg.get("agents") or ({"": cfg["agent"]} if cfg.get("agent") else {}))


@serve.ingress()
class TamiyoServer:
    """Deployment class; built with `esper.serve.launch.deployment_for(config)`."""

    def __init__(self, token: str | None, max_body_bytes: int, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        # The agents arrive through user_config (reconfigure runs before the replica takes traffic), so that a new
        # agent.pt or adapter is a config update applied in place, not a new deployment version with restarted replicas.
        self.domains: ServedDomains | None = None
        self.token, self.max_body_bytes = token, max_body_bytes
        self.reload_error: str | None = None
        self._decide_rows.set_max_batch_size(max_batch_size)
        self._decide_rows.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def __serve_build_asgi_app__(self):
        return guarded(build_api(self), self.token, self.max_body_bytes)

    def reconfigure(self, user_config: dict) -> None:
        """Hot reload: {"agents": {domain: path}} loads every agent whose file changed, adds new domains and drops
        missing ones. A set that fails to load, shares no core, or changes a served domain's observation/action
        layout is refused whole (logged, shown in GET /v1/policy) and the current policies keep serving."""
        agents = agents_of(user_config)
        if self.domains is None:  # replica start: nothing to fall back on, so a bad file fails the start loudly
            self.domains = ServedDomains.load(agents)
            self.domains.canary()
            log.info("serving %s (policies %s)", agents, self.domains.versions())
            return
        if not agents or self._unchanged(agents):
            return
        try:
            new = ServedDomains.load(agents)
            new.canary()  # a file with broken (e.g. NaN) weights must not replace a working policy
            changed = _same_interfaces(self.domains, new)
            if changed:
                raise ValueError(f"observation/action layout of {changed} differs from the served policy's; deploy it anew")
        except Exception as exc:  # AgentFileError, OSError, ValueError: never take the replica down
            self.reload_error = f"{agents}: {exc}"
            log.error("hot reload refused: %s", self.reload_error)
            return
        self.domains, self.reload_error = new, None  # requests already holding an old policy finish on it
        log.info("hot-reloaded %s (policies %s)", agents, new.versions())

    def _unchanged(self, agents: dict[str, str]) -> bool:
        current = {name: (p.path, p.version) for name, p in self.domains.policies.items()}
        named = {name or self.domains.default: Path(path) for name, path in agents.items()}
        return named.keys() == current.keys() and all(
            current[n][0] == path and file_digest(path) == current[n][1] for n, path in named.items())

    def check_health(self) -> None:
        """Serve calls this periodically; raising marks the replica unhealthy and Serve replaces it."""
        self.domains.canary()

    async def decide_one(self, policy: ServedPolicy, row: tuple[np.ndarray, np.ndarray, bool, int | None]) -> Choice:
        return await self._decide_rows((policy, row))

    async def decide(self, row: tuple[np.ndarray, np.ndarray, bool, int | None], domain: str | None = None) -> Choice:
        """The in-cluster path (a DeploymentHandle call, no HTTP): one prepared row for `domain` (None: the default)."""
        return await self._decide_rows((self.domains.get(domain), row))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _decide_rows(self, rows: list[tuple[ServedPolicy, tuple]]) -> list[Choice]:
        return decide_grouped(rows)  # single decisions of any domains merged: one pass per domain
