"""Config of the served Tamiyo (one pydantic model; `experiments/serve_tamiyo.py` exposes it as flags)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from esper.leyline.base import EsperModel
from esper.runtime.local_ray import is_loopback_host as is_loopback


class ServeConfig(EsperModel):
    """Where and how the policy is served."""

    agent: Path | None = None
    """The agent.pt to serve (loaded weights_only; its manifest is checked), under its adapter's domain or 'default'."""
    domains: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")], Path] = {}
    """Several domains from one deployment: {domain: agent.pt}, each a core agent on the same core (its adapter
    decides for that domain); the first is the default. Instead of `agent`."""
    host: str = "127.0.0.1"
    """Address to bind. Anything but loopback requires `token`."""
    port: int = Field(8000, ge=1, le=65535)
    """HTTP port."""
    token: str | None = Field(None, min_length=16, pattern=r"^[\x21-\x7e]+$")
    """Bearer token every route but /healthz requires (Authorization: Bearer <token>; printable ASCII, no spaces); None = no auth (loopback only)."""
    ingress: Literal["proxy", "haproxy"] = "haproxy"
    """HTTP front end: HAProxy (≈ 2–4 ms a decision here; needs RAY_SERVE_ENABLE_HA_PROXY=1 on every node before the
    cluster starts, and launch.runtime_env() in the ray.init that starts Serve so its stats and metrics ports
    stay on loopback) or Serve's Python proxy (≈ 10 ms; nothing to set). docs/api.md."""
    replicas: int = Field(1, ge=1)
    """Serve replicas of the policy."""
    cpus_per_replica: float = Field(0.5, gt=0)
    """CPU share each replica reserves (fractional: the policy is a small MLP)."""
    max_ongoing_requests: int = Field(64, ge=1)
    """Requests a replica works on at once (the pool @serve.batch draws its batches from)."""
    max_queued_requests: int = Field(256, ge=-1)
    """Requests waiting for a replica before new ones are refused with 503 (-1 = unbounded)."""
    request_timeout_s: float = Field(10.0, gt=0)
    """A request not answered within this many seconds is answered 408/504 by Serve."""
    max_batch_size: int = Field(32, ge=1)
    """Single-decision requests merged into one policy pass by @serve.batch."""
    batch_wait_timeout_s: float = Field(0.0, ge=0)
    """How long the first request of a batch waits for others to join (adds up to this to every request's latency;
    0 = none: under load, requests that queued while the previous batch ran still go together)."""
    max_body_bytes: int = Field(4 << 20, ge=1024)
    """Larger request bodies are refused with 413 before they are parsed."""

    @model_validator(mode="after")
    def _agents(self) -> "ServeConfig":
        if (self.agent is None) == (not self.domains):
            raise ValueError("give agent (one policy) or domains (domain → agent.pt), not both or neither")
        return self

    def agents(self) -> dict[str, str]:
        """{domain: absolute agent path} ('' = the lone agent's own domain): the deployment's user_config."""
        return {name: str(p.resolve()) for name, p in self.domains.items()} or {"": str(self.agent.resolve())}

    @model_validator(mode="after")
    def _token_when_exposed(self) -> "ServeConfig":
        if not is_loopback(self.host) and self.token is None:
            raise ValueError(f"host {self.host!r} is not loopback: set token (≥16 characters) to serve it")
        return self
