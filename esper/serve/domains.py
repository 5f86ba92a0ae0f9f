"""The policies one deployment serves, by domain: a single agent, or core agents (one per domain: the shared core
plus that domain's adapter) whose core is held once in memory. A request names its domain; none = the default.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from esper.serve.policy import BadObservation, Choice, ServedPolicy
from esper.tamiyo.core import LayoutPolicy, core_hash

DOMAIN_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEFAULT_NAME = "default"


class UnknownDomain(BadObservation):
    """A request named a domain this deployment does not serve (the API answers 422 naming the known ones)."""


def domain_of(policy: ServedPolicy) -> str:
    """The domain a lone agent is served under: its adapter's domain, or 'default'."""
    adapter = (policy.agent.manifest.get("network") or {}).get("adapter") or {}
    return str(adapter.get("domain") or DEFAULT_NAME)


class ServedDomains:
    """Domain → ServedPolicy. The first domain is the default. With several, every agent must be a core agent on
    the same core (checked by hash); they then share one core object, so only the adapters are per domain."""

    def __init__(self, policies: dict[str, ServedPolicy]) -> None:
        if not policies:
            raise ValueError("no domain to serve")
        bad = [name for name in policies if not DOMAIN_NAME.match(name)]
        if bad:
            raise ValueError(f"domain names must match {DOMAIN_NAME.pattern} (got {bad})")
        self.policies = dict(policies)
        self.default = next(iter(self.policies))
        if len(self.policies) > 1:
            _share_one_core(self.policies)

    @classmethod
    def load(cls, agents: dict[str, str | os.PathLike]) -> "ServedDomains":
        """From {domain: agent.pt}; an empty name ('') takes the agent's own domain (`domain_of`)."""
        loaded = [(name, ServedPolicy(path)) for name, path in agents.items()]
        return cls({name or domain_of(policy): policy for name, policy in loaded})

    @property
    def default_policy(self) -> ServedPolicy:
        return self.policies[self.default]

    def get(self, domain: str | None) -> ServedPolicy:
        if domain is None:
            return self.default_policy
        if domain not in self.policies:
            raise UnknownDomain(f"unknown domain {domain!r}: this server has {sorted(self.policies)}")
        return self.policies[domain]

    def canary(self) -> None:
        for policy in self.policies.values():
            policy.canary()

    def versions(self) -> dict[str, str]:
        return {name: p.version for name, p in self.policies.items()}

    def paths(self) -> dict[str, Path]:
        return {name: p.path for name, p in self.policies.items()}

    def describe(self) -> dict:
        """GET /v1/policy: the default domain's description at the top level (what single-agent clients read),
        and every domain's under `domains`."""
        return self.default_policy.describe() | {
            "domain": self.default, "domains": {name: p.describe() for name, p in self.policies.items()}}


def _share_one_core(policies: dict[str, ServedPolicy]) -> None:
    """Every policy a LayoutPolicy on the same core (hash); point them all at the first one's core object."""
    nets = {name: p.agent.net for name, p in policies.items()}
    flat = [name for name, net in nets.items() if not isinstance(net, LayoutPolicy)]
    if flat:
        raise ValueError(f"domains {flat} are not core agents: several domains share one Tamiyo core "
                         "(train them with ppo.network=core and ppo.frozen_core)")
    hashes = {name: core_hash(net.core) for name, net in nets.items()}
    first = next(iter(nets.values())).core
    if len(set(hashes.values())) > 1:
        raise ValueError("domains run on different cores: " + ", ".join(f"{n} {h[:12]}…" for n, h in hashes.items()))
    for net in nets.values():
        net.core = first  # equal weights (same hash): one copy in memory, adapters per domain


def decide_grouped(rows: list[tuple[ServedPolicy, tuple]]) -> list[Choice]:
    """(policy, row) pairs from any domains → one choice each, in order: one pass per policy."""
    groups: dict[int, tuple[ServedPolicy, list[int]]] = {}
    for i, (policy, _) in enumerate(rows):
        groups.setdefault(id(policy), (policy, []))[1].append(i)
    out: list[Choice | None] = [None] * len(rows)
    for policy, idx in groups.values():
        for i, choice in zip(idx, policy.decide_rows([rows[i][1] for i in idx])):
            out[i] = choice
    return out
