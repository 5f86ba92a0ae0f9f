"""agent.pt: a trained Tamiyo in one file — weights + manifest + provenance, tensors and plain containers only.

Loadable with `torch.load(path, weights_only=True)`; never pickled classes. Loading checks the manifest
against this code (format version, feature layout, action spec) and fails with a clear message on mismatch.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from esper.kasmina.model import atomic_torch_save
from esper.leyline import ActionSpec
from esper.tamiyo.adapter import AdapterError
from esper.tamiyo.core import LayoutPolicy, core_hash
from esper.tamiyo.parts import policy_from_state
from esper.tamiyo.policy import TamiyoPolicyNet

AGENT_FORMAT = "esper.agent"
AGENT_FORMAT_VERSION = 4
# Version 1 named the metric features after accuracy (the only metric there was); version 2 after the task's
# metric. Same values, same order: a version-1 agent loads with its names migrated.
V1_FEATURE_RENAMES = {"val_accuracy": "val_metric", "delta_acc_1": "delta_metric_1", "delta_acc_2": "delta_metric_2",
                      "delta_acc_3": "delta_metric_3"}
# Features added since, by the version that added them: (the feature they follow, the new ones). An older agent
# loads with zero input weights on them, so it decides exactly as it did.
FEATURES_ADDED = {
    3: ("live_seed_fraction", ("budget_spent", "excess_flops_ratio")),  # compute (equal-compute issue)
    4: ("excess_flops_ratio", ("log10_rent", "budget_epochs")),  # the price of capacity and the budget (world families)
}
INPUT_LAYERS = ("trunk.0.weight", "value_net.0.weight")  # the layers that read the features: (hidden, F)


class AgentFileError(ValueError):
    """agent.pt is corrupt, of another format, or does not match this code."""


@dataclass
class Agent:
    net: TamiyoPolicyNet | LayoutPolicy
    spec: ActionSpec
    feature_names: list[str]
    manifest: dict[str, Any]
    provenance: dict[str, Any]


def _versions() -> dict[str, str]:
    import esper

    out = {"esper": str(esper.__version__), "torch": str(torch.__version__), "python": platform.python_version()}
    try:
        import ray

        out["ray"] = str(ray.__version__)
    except ImportError:
        pass
    return out


def network_manifest(net: TamiyoPolicyNet | LayoutPolicy) -> dict[str, Any]:
    """The manifest's `network`: the flat MLP, or the layout-free core with the hash of its weights."""
    if isinstance(net, LayoutPolicy):
        adapter = net.adapter.describe() if net.adapter is not None else None
        return {"kind": "core", "hidden": net.hidden, "core_hash": core_hash(net.core), "adapter": adapter}
    return {"kind": "mlp_autoregressive", "hidden": net.hidden}


def _network(m: dict[str, Any], spec: ActionSpec, n_features: int) -> TamiyoPolicyNet | None:
    """The flat network to load weights into; None for the core (built with its weights: `policy_from_state`)."""
    kind, hidden = m["network"].get("kind", "mlp_autoregressive"), int(m["network"]["hidden"])
    if kind == "core":
        return None
    if kind != "mlp_autoregressive":
        raise ValueError(f"unknown network kind {kind!r} (known: 'mlp_autoregressive', 'core')")
    return TamiyoPolicyNet(n_features, tuple(m["nvec"]), hidden=hidden)


def save_agent(path: str | os.PathLike, net: TamiyoPolicyNet | LayoutPolicy, spec: ActionSpec, feature_names: list[str],
               config: dict[str, Any], code_version: str = "unknown", extra: dict[str, Any] | None = None) -> None:
    """Write agent.pt atomically."""
    if len(feature_names) != net.n_features or tuple(spec.nvec) != net.nvec:
        raise ValueError("feature names / action spec do not match the network's input and heads")
    manifest = {
        "format": AGENT_FORMAT, "format_version": AGENT_FORMAT_VERSION,
        "n_features": net.n_features, "feature_names": list(feature_names),
        "nvec": list(net.nvec), "action_spec": spec.to_dict(),
        "network": network_manifest(net),
        "normaliser": None,  # features are bounded and scaled by construction (esper.leyline.features.py)
    }
    provenance = {"config": config, "code_version": code_version, "versions": _versions(),
                  "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **(extra or {})}
    payload = {"manifest": manifest, "provenance": provenance,
               "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}
    atomic_torch_save(payload, Path(path))


def load_agent(path: str | os.PathLike, expected_features: list[str] | None = None, map_location: str = "cpu") -> Agent:
    """Load and validate agent.pt; `expected_features` (this code's feature layout) must match if given."""
    path = Path(path)
    if not path.is_file():
        raise AgentFileError(f"agent file not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, pickled classes refused by weights_only
        first = (str(exc).strip().splitlines() or [""])[0][:120]  # torch's messages run to a paragraph: one line
        raise AgentFileError(f"{path}: not an agent.pt (torch.load: {type(exc).__name__}: {first})") from None
    m = payload.get("manifest") if isinstance(payload, dict) else None
    if not isinstance(m, dict) or m.get("format") != AGENT_FORMAT:
        raise AgentFileError(f"{path}: not an Esper agent (manifest format must be {AGENT_FORMAT!r})")
    if m.get("format_version") not in range(1, AGENT_FORMAT_VERSION + 1) or isinstance(m.get("format_version"), bool):
        raise AgentFileError(f"{path}: agent format version {m.get('format_version')} ≠ supported {AGENT_FORMAT_VERSION}")
    try:
        names = list(m["feature_names"])
        if m["format_version"] == 1:
            names = [V1_FEATURE_RENAMES.get(n, n) for n in names]
        if isinstance(payload.get("state_dict"), dict):
            for version, (after, new) in FEATURES_ADDED.items():
                if m["format_version"] < version:
                    names = _add_features(names, payload["state_dict"], after, new)
        _check_features(path, names, expected_features)
        try:
            spec = ActionSpec.from_dict(m["action_spec"])
        except (TypeError, ValueError) as exc:
            raise AgentFileError(f"{path}: malformed action spec in the manifest ({exc})") from None
        if list(spec.nvec) != list(m["nvec"]):
            raise AgentFileError(f"{path}: action spec {spec.nvec} disagrees with manifest nvec {m['nvec']}")
        net = _network(m, spec, len(names))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, AgentFileError):
            raise
        raise AgentFileError(f"{path}: malformed manifest ({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    if not isinstance(payload.get("state_dict"), dict):
        raise AgentFileError(f"{path}: weights do not match the manifest's network (state_dict is missing or not a dict)")
    try:
        if net is None:
            net = policy_from_state(m["network"], spec, payload["state_dict"])
        else:
            net.load_state_dict(payload["state_dict"])
    except AdapterError as exc:
        raise AgentFileError(f"{path}: {exc}") from None
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        detail = " ".join(str(exc).split())  # torch lists every mismatched tensor on lines of its own: one line
        raise AgentFileError(f"{path}: weights do not match the manifest's network ({detail[:400]})") from None
    return Agent(net.eval(), spec, names, m, payload.get("provenance", {}))


def _add_features(names: list[str], state_dict: dict[str, Any], after: str, new: tuple[str, ...]) -> list[str]:
    """Migrate an agent to a version that added the features `new` after `after`: the input layers get zero
    weights for them (in place). The names after migration are returned."""
    at = names.index(after) + 1
    for key in INPUT_LAYERS:
        w = state_dict.get(key)
        if isinstance(w, torch.Tensor) and w.dim() == 2 and w.shape[1] == len(names):
            zeros = w.new_zeros(w.shape[0], len(new))
            state_dict[key] = torch.cat([w[:, :at], zeros, w[:, at:]], dim=1)  # (H, F) → (H, F + len(new))
    return names[:at] + list(new) + names[at:]


def _check_features(path: Path, names: list[str], expected: list[str] | None) -> None:
    if expected is None or names == list(expected):
        return
    diff = sorted(set(names) ^ set(expected))[:5]
    if not diff:  # same names, other order
        i = next(i for i, (a, b) in enumerate(zip(names, expected)) if a != b)
        diff = [f"position {i}: agent has {names[i]!r}, code has {expected[i]!r}"]
    raise AgentFileError(f"{path}: observation features differ from this code's (e.g. {diff}); retrain or use matching code")
