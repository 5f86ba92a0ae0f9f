"""The Ray Serve deployment: one replica = one loaded policy behind the guarded FastAPI app.

Single decisions are merged by `@serve.batch` into one policy pass. The agent arrives as Serve's user_config and
is loaded in `reconfigure`: re-running `serve.run` with a new agent (launch.reload) rolls the replicas — new ones
load it, old ones drain, so no request is dropped — and a config-file deploy (`serve deploy`) applies it in place,
where requests already holding the old policy finish on it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from ray import serve

from esper.serve.api import build_api, guarded
from esper.serve.policy import Choice, ServedPolicy, file_digest

log = logging.getLogger("ray.serve")


def _same_interface(a: ServedPolicy, b: ServedPolicy) -> bool:
    return a.agent.feature_names == b.agent.feature_names and a.agent.spec.to_dict() == b.agent.spec.to_dict()


@serve.ingress()
class TamiyoServer:
    """Deployment class; built with `esper.serve.launch.deployment_for(config)`."""

    def __init__(self, token: str | None, max_body_bytes: int, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        # The agent arrives through user_config (reconfigure runs before the replica takes traffic), so that a new
        # agent.pt is a config update applied in place, not a new deployment version with restarted replicas.
        self.policy: ServedPolicy | None = None
        self.token, self.max_body_bytes = token, max_body_bytes
        self.reload_error: str | None = None
        self._decide_rows.set_max_batch_size(max_batch_size)
        self._decide_rows.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def __serve_build_asgi_app__(self):
        return guarded(build_api(self), self.token, self.max_body_bytes)

    def reconfigure(self, user_config: dict) -> None:
        """Hot reload: {"agent": path} loads that agent.pt if it changed. A file that fails to load or has another
        observation/action layout is refused (logged, shown in GET /v1/policy) and the current policy keeps serving."""
        path = (user_config or {}).get("agent")
        if self.policy is None:  # replica start: no policy to fall back on, so a bad file fails the start loudly
            self.policy = ServedPolicy(path)
            self.policy.canary()
            log.info("serving %s (policy %s)", path, self.policy.version)
            return
        if not path or (Path(path) == self.policy.path and file_digest(Path(path)) == self.policy.version):
            return
        try:
            new = ServedPolicy(path)
            new.canary()  # a file with broken (e.g. NaN) weights must not replace a working policy
            if not _same_interface(self.policy, new):
                raise ValueError("observation/action layout differs from the served policy's; deploy it anew")
        except Exception as exc:  # AgentFileError, OSError, ValueError: never take the replica down
            self.reload_error = f"{path}: {exc}"
            log.error("hot reload refused: %s", self.reload_error)
            return
        self.policy, self.reload_error = new, None  # requests already holding the old policy finish on it
        log.info("hot-reloaded %s (policy %s)", path, new.version)

    def check_health(self) -> None:
        """Serve calls this periodically; raising marks the replica unhealthy and Serve replaces it."""
        self.policy.canary()

    async def decide_one(self, row: tuple[np.ndarray, np.ndarray, bool, int | None]) -> Choice:
        return await self._decide_rows(row)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _decide_rows(self, rows: list[tuple[np.ndarray, np.ndarray, bool, int | None]]) -> list[Choice]:
        return self.policy.decide_rows(rows)
