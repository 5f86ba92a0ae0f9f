"""core.pt and adapter.pt: a frozen Tamiyo core and a domain adapter, each a file of its own.

Both load with `torch.load(weights_only=True)` (tensors and plain containers only). A core file carries the hash of
its weights and is refused if they no longer match it; an adapter file names the hash of the core it was trained on
and is refused, with both hashes, by any other core. An agent.pt of network kind "core" holds the same two parts
(`policy_from_state`), so a served or evaluated agent and its parts are interchangeable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from esper.kasmina.model import atomic_torch_save
from esper.leyline import ActionSpec
from esper.tamiyo.adapter import AdapterError, TamiyoAdapter, check_fits
from esper.tamiyo.core import LayoutPolicy, TamiyoCore, core_hash

CORE_FORMAT, ADAPTER_FORMAT, PARTS_VERSION = "esper.core", "esper.adapter", 1


def save_core(path: str | os.PathLike, core: TamiyoCore, provenance: dict[str, Any] | None = None) -> str:
    """Write core.pt atomically; returns the core's hash."""
    digest = core_hash(core)
    atomic_torch_save({"manifest": {"format": CORE_FORMAT, "format_version": PARTS_VERSION, "hidden": core.hidden,
                                    "core_hash": digest},
                       "provenance": provenance or {}, "state_dict": _cpu(core.state_dict())}, Path(path))
    return digest


def load_core(path: str | os.PathLike) -> TamiyoCore:
    """A core from core.pt, its weights checked against the hash in the file (frozen: no gradients)."""
    m, state = _read(path, CORE_FORMAT)
    core = TamiyoCore(int(m["hidden"]))
    _load_weights(path, core, state)
    if core_hash(core) != m.get("core_hash"):
        raise AdapterError(f"{path}: the core's weights do not match the hash in its manifest (altered or corrupt)")
    return core.requires_grad_(False).eval()


def save_adapter(path: str | os.PathLike, adapter: TamiyoAdapter, provenance: dict[str, Any] | None = None) -> None:
    """Write adapter.pt atomically (its manifest names the core it belongs to)."""
    manifest = {"format": ADAPTER_FORMAT, "format_version": PARTS_VERSION, **adapter.describe()}
    atomic_torch_save({"manifest": manifest, "provenance": provenance or {}, "state_dict": _cpu(adapter.state_dict())},
                      Path(path))


def load_adapter(path: str | os.PathLike, core: TamiyoCore) -> TamiyoAdapter:
    """The adapter in adapter.pt, built for `core` — AdapterError naming both hashes if it belongs to another."""
    m, state = _read(path, ADAPTER_FORMAT)
    adapter = adapter_for(core, m)
    _load_weights(path, adapter, state)
    return adapter


def adapter_for(core: TamiyoCore, described: dict[str, Any]) -> TamiyoAdapter:
    """An (untrained) adapter shaped for `core` from a manifest's description; the core must be the one named."""
    adapter = TamiyoAdapter(core, str(described["domain"]), int(described["rank"]))
    adapter.core_hash = str(described["core_hash"])
    check_fits(adapter, core)
    return adapter


def policy_from_state(network: dict[str, Any], spec: ActionSpec, state: dict[str, torch.Tensor]) -> LayoutPolicy:
    """The LayoutPolicy of an agent.pt of kind "core": the core (hash checked), then its adapter if it has one."""
    core = TamiyoCore(int(network["hidden"]))
    core.load_state_dict({k[len("core."):]: v for k, v in state.items() if k.startswith("core.")})
    if core_hash(core) != network.get("core_hash"):
        raise AdapterError("the core's weights do not match the hash in its manifest (altered or corrupt)")
    policy = LayoutPolicy(core, spec)
    if network.get("adapter"):
        adapter = adapter_for(core, network["adapter"])
        adapter.load_state_dict({k[len("adapter."):]: v for k, v in state.items() if k.startswith("adapter.")})
        policy.attach(adapter)
    extra = [k for k in state if not k.startswith(("core.", "adapter."))]
    if extra or (not network.get("adapter") and any(k.startswith("adapter.") for k in state)):
        raise AdapterError(f"unexpected weights for a core agent: {(extra or ['adapter.*'])[:3]}")
    return policy


def _read(path: str | os.PathLike, fmt: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    path = Path(path)
    if not path.is_file():
        raise AdapterError(f"{fmt} file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, pickled classes refused by weights_only
        first = (str(exc).strip().splitlines() or [""])[0][:120]
        raise AdapterError(f"{path}: not a {fmt} file (torch.load: {type(exc).__name__}: {first})") from None
    m = payload.get("manifest") if isinstance(payload, dict) else None
    if not isinstance(m, dict) or m.get("format") != fmt:
        found = m.get("format") if isinstance(m, dict) else None
        raise AdapterError(f"{path}: not a {fmt} file (manifest format {found!r})")
    if m.get("format_version") != PARTS_VERSION or not isinstance(payload.get("state_dict"), dict):
        raise AdapterError(f"{path}: {fmt} format version {m.get('format_version')} ≠ supported {PARTS_VERSION}, "
                           "or no weights")
    return m, payload["state_dict"]


def _load_weights(path: str | os.PathLike, module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise AdapterError(f"{path}: weights do not match ({' '.join(str(exc).split())[:300]})") from None


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}
