"""Client side of the served Tamiyo: `TamiyoClient` (HTTP with timeouts and bounded retries) and
`RemoteTamiyo`, a Tolaria controller that asks the server every epoch and falls back safely when it cannot."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import requests

from esper.leyline import FactoredAction, Op
from esper.leyline.control import Controller, Decision, Observation
from esper.leyline.features import encode, feature_names

log = logging.getLogger("esper.serve.client")


class TamiyoUnavailable(RuntimeError):
    """The server could not be reached or answered with an error after the allowed retries."""


@dataclass
class TamiyoClient:
    """Talks to a served Tamiyo. Keeps one HTTP connection alive; retries connection errors and 5xx/429 answers
    with exponential backoff, never a 4xx (a bad request stays bad)."""

    url: str = "http://127.0.0.1:8000"
    token: str | None = None
    timeout_s: float = 2.0
    retries: int = 2
    backoff_s: float = 0.05
    domain: str | None = None
    """The served domain every decision asks for (a multi-domain server); None = the server's default."""
    session: requests.Session = field(default_factory=requests.Session, repr=False)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        if self.token:
            self.session.headers["Authorization"] = f"Bearer {self.token}"

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                r = self.session.request(method, self.url + path, json=body, timeout=self.timeout_s)
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if r.status_code < 400:
                return r.json()
            message = _error_text(r)
            if r.status_code < 500 and r.status_code != 429:
                raise ValueError(f"{method} {path} refused ({r.status_code}): {message}")
            last = f"HTTP {r.status_code}: {message}"
        raise TamiyoUnavailable(f"{method} {self.url}{path} failed after {self.retries + 1} attempts ({last})")

    def health(self) -> dict:
        return self._call("GET", "/healthz")

    def policy(self) -> dict:
        return self._call("GET", "/v1/policy")

    def decide(self, features, action_mask, sample: bool = False, seed: int | None = None) -> dict:
        body = {"features": [float(x) for x in features], "action_mask": [float(x) for x in action_mask], "sample": sample}
        if seed is not None:
            body["seed"] = seed
        if self.domain is not None:
            body["domain"] = self.domain
        return self._call("POST", "/v1/decide", body)

    def decide_batch(self, observations: list[tuple], sample: bool = False, seed: int | None = None) -> list[dict]:
        body = {"observations": [{"features": [float(x) for x in f], "action_mask": [float(x) for x in m]}
                                 for f, m in observations], "sample": sample}
        if seed is not None:
            body["seed"] = seed
        if self.domain is not None:
            body["domain"] = self.domain
        return self._call("POST", "/v1/decide/batch", body)["decisions"]


def _error_text(r: requests.Response) -> str:
    try:
        return str(r.json().get("error", r.text[:200]))
    except ValueError:
        return r.text[:200]


class RemoteTamiyo:
    """A Controller whose decisions come from a served Tamiyo.

    When the server is down, slow or refuses, the epoch goes on with `fallback` (WAIT by default) and the
    failure is logged and counted; the next epoch asks the server again, so a restarted server is used as
    soon as it answers. An answer the local masks forbid is never executed."""

    name = "remote"

    def __init__(self, client: TamiyoClient, fallback: Controller | None = None) -> None:
        self.client, self.fallback = client, fallback
        self.asked = self.answered = self.fallbacks = 0
        self.checked = False

    def _check_layout(self, obs: Observation) -> None:
        info = self.client.policy()
        if self.client.domain is not None:  # the layout of the domain asked for, not the default's
            info = (info.get("domains") or {}).get(self.client.domain)
            if info is None:
                raise ValueError(f"the server has no domain {self.client.domain!r}")
        if info["action"]["nvec"] != list(obs.spec.nvec) or info["observation"]["mask_size"] != obs.spec.mask_size:
            raise ValueError(f"served policy's action layout {info['action']['nvec']} does not fit this plane {list(obs.spec.nvec)}")
        if info["observation"]["feature_names"] != feature_names(obs.spec):
            raise ValueError("served policy reads other observation features than this plane produces")
        self.checked = True

    def decide(self, obs: Observation) -> Decision:
        self.asked += 1
        try:
            if not self.checked:
                self._check_layout(obs)
            features = encode(obs.spec, obs.signals, obs.reports)
            answer = self.client.decide(features, obs.masks.flat())
            a = answer["action"]
            action = FactoredAction(Op(a["op"]), a["slot"], a["blueprint"], a["blend"])
            if not obs.masks.allows(action):
                raise ValueError(f"server proposed a masked action {a}")
        except (TamiyoUnavailable, ValueError, KeyError, TypeError, IndexError) as exc:  # incl. garbled answers
            self.fallbacks += 1
            log.warning("Tamiyo server not used this epoch (%s); falling back", exc)
            if self.fallback is not None:
                d = self.fallback.decide(obs)
                return Decision(d.action, f"fallback ({exc.__class__.__name__}): {d.reason}")
            return Decision(FactoredAction(Op.WAIT), f"fallback WAIT ({exc.__class__.__name__})")
        self.answered += 1
        return Decision(action, f"served policy {answer['policy_version']} p={answer['probability']:.2f}")
