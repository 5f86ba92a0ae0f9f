"""MorphogeneticModel: a host plus its plane of seed slots, parameter accounting, manifests and snapshots."""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from esper.kasmina.blueprints import BLUEPRINTS, get_blueprint
from esper.kasmina.protocol import HostProtocol
from esper.kasmina.slot import IllegalCommandError, SeedSlot
from esper.kasmina.config import KasminaConfig
from esper.leyline import FOSSIL_STAGES, LIVE_STAGES, ActionMasks, ActionSpec, ArchitectureManifest, FactoredAction, Op, SlotReport, Stage, compute_masks
from esper.leyline.experiment import ConfigError
from esper.leyline.manifest import MANIFEST_FORMAT_VERSION
from esper.leyline.telemetry import TelemetryEvent

GROWN_MODEL_FORMAT = "esper.grown_model/1"


@dataclass(frozen=True)
class ParamCounts:
    host: int
    active_seeds: int
    fossilized: int

    @property
    def total(self) -> int:
        return self.host + self.active_seeds + self.fossilized

    @property
    def excess_ratio(self) -> float:
        """(P_fossilized + P_active_seeds) / P_host — what rent is charged on."""
        return (self.fossilized + self.active_seeds) / max(self.host, 1)


def fitting_blueprints(requested: tuple[str, ...] | None, points: list, every: bool = False) -> tuple[str, ...]:
    """The plane's blueprints: `requested` as given (each must exist and one must fit a point — with `every`, each
    must fit one), or for None every registered blueprint that fits at least one point, in registry order."""
    kinds = {p.kind for p in points}
    if requested is None:
        return tuple(name for name, bp in BLUEPRINTS.items() if bp.kind in kinds)
    unknown = [name for name in requested if name not in BLUEPRINTS]
    if unknown:  # fail here, at construction, naming the field
        raise ConfigError(f"kasmina.blueprints: unknown blueprint(s) {unknown}; known: {sorted(BLUEPRINTS)}")
    misfits = [name for name in requested if get_blueprint(name).kind not in kinds]
    if misfits and (every or len(misfits) == len(requested)):
        raise ConfigError(f"kasmina.blueprints: {misfits} fit none of this host's injection points "
                          f"(kinds {sorted(kinds)}); leave it unset to offer every blueprint that fits")
    return tuple(requested)


class MorphogeneticModel(nn.Module):
    """A host whose injection points each hold a SeedSlot. Works with any `HostProtocol` host."""

    def __init__(self, host: nn.Module, config: KasminaConfig | None = None) -> None:
        super().__init__()
        if not isinstance(host, HostProtocol) or not isinstance(host, nn.Module):
            raise TypeError(f"{type(host).__name__} must be an nn.Module implementing HostProtocol")
        self.host = host
        points = list(host.injection_points())
        names = [p.name for p in points]
        if not points or len(set(names)) != len(names):
            raise ValueError(f"host must declare ≥1 injection point with unique names, got {names}")
        config = config or KasminaConfig()
        self.config = config.model_copy(update={"blueprints": fitting_blueprints(config.blueprints, points)})
        host_params = sum(p.numel() for p in host.parameters())
        gates = self.config.gate_config()
        step, wither = self.config.isolation_step, self.config.wither_tempo
        self.slots = nn.ModuleDict({p.name: SeedSlot(p, gates, host_params, step, wither) for p in points})
        self._slot_by_name: dict[str, SeedSlot] = dict(self.slots.items())  # plain dict: cheap lookup
        self.listeners: list[Callable[[TelemetryEvent], None]] = []
        for slot in self._slot_by_name.values():
            slot.listener = self._dispatch
        self.action_spec = plane_action_spec(points, host_params, self.config)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        return self.host.forward_through(x, self._inject)

    def _inject(self, name: str, h: Tensor) -> Tensor:
        slot = self._slot_by_name[name]
        if slot.seed is None:  # DORMANT (and embargo stages): identity, no module call at all
            return h
        return slot(h)

    def pop_isolation_loss(self) -> Tensor | None:
        """Sum of the TRAINING seeds' isolation penalties from the last forward (then cleared).
        Add it to the loss before backward; it only reaches seed parameters, never the host."""
        terms = [s.isolation_penalty for s in self._slot_by_name.values() if s.isolation_penalty is not None]
        for s in self._slot_by_name.values():
            s.isolation_penalty = None
        return torch.stack(terms).sum() if terms else None

    # ------------------------------------------------------------------ commands
    def germinate(self, slot: str, blueprint: str, tempo: int = 5, curve: str = "linear") -> None:
        if blueprint not in self.config.blueprints:
            raise IllegalCommandError(f"blueprint {blueprint!r} is not enabled; enabled: {list(self.config.blueprints)}")
        p = self._first_param()
        self.slot(slot).germinate(blueprint, tempo, curve, device=p.device, dtype=p.dtype, template=self._template(slot))
        if self.config.lifecycle == "graft":
            self.slot(slot).graft()

    def advance(self, slot: str) -> Stage:
        return self.slot(slot).advance()

    def cull(self, slot: str, reason: str = "commanded") -> None:
        self.slot(slot).cull(reason)

    def wither(self, slot: str, reason: str = "commanded") -> None:
        self.slot(slot).wither(reason)

    def revive(self, slot: str, reason: str = "commanded") -> None:
        self.slot(slot).revive(reason)

    def step_epoch(self) -> None:
        """Tick every slot's clock once (call once per decision point, after the controller acted)."""
        for slot in self._slot_by_name.values():
            slot.step_epoch()

    def apply(self, action: FactoredAction, reason: str = "commanded", audit: bool = False) -> None:
        """Execute a factored action; an action the masks forbid raises and changes nothing. `audit`: the action is
        in the audit layout (`audit_spec`: Emrakul's WITHER/REVIVE/CULL). With `kasmina.auto_advance`, every seed
        whose gate is then open moves one stage on."""
        spec = self.audit_spec if audit else self.action_spec
        values = (int(action.op), action.slot, action.blueprint, action.blend)
        if any(not 0 <= v < n for v, n in zip(values, spec.nvec)):
            raise IllegalCommandError(f"action {values} is out of range for heads of sizes {spec.nvec}")
        masks = compute_masks(spec, self.reports())
        if not masks.allows(action):
            raise IllegalCommandError(f"action {action} is masked out (op mask {masks.op.astype(int).tolist()})")
        name = spec.slots[action.slot]
        if action.op is Op.GERMINATE:
            tempo, curve = spec.blend_choice(action.blend)
            self.germinate(name, spec.blueprints[action.blueprint], tempo, curve.value)
        elif action.op is Op.ADVANCE:
            self.advance(name)
        elif action.op in (Op.CULL, Op.WITHER, Op.REVIVE):
            getattr(self, action.op.name.lower())(name, reason)
        if self.config.auto_advance:
            self.advance_open_gates()

    def advance_open_gates(self) -> list[str]:
        """Move every seed whose next gate is open one stage on (`kasmina.auto_advance`); the slots moved."""
        masks, names = self.masks(), self.action_spec.slots
        moved = [name for i, name in enumerate(names) if masks.op[Op.ADVANCE] and masks.slot[Op.ADVANCE, i]]
        for name in moved:
            self.advance(name)
        return moved

    # ------------------------------------------------------------------ queries
    def slot(self, name: str) -> SeedSlot:
        try:
            return self._slot_by_name[name]
        except KeyError:
            raise KeyError(f"unknown slot {name!r}; slots: {list(self._slot_by_name)}") from None

    def reports(self) -> list[SlotReport]:
        return [s.report() for s in self._slot_by_name.values()]

    def masks(self) -> ActionMasks:
        return compute_masks(self.action_spec, self.reports())

    @property
    def audit_spec(self) -> ActionSpec:
        """The plane's action layout with the audit ops (WITHER, REVIVE, CULL of a withered fossil): what Emrakul
        plays, whatever Tamiyo's layout offers."""
        return self.action_spec if self.action_spec.audit else replace(self.action_spec, audit=True)

    def param_counts(self) -> ParamCounts:
        slots = self._slot_by_name.values()
        return ParamCounts(
            host=sum(p.numel() for p in self.host.parameters()),
            active_seeds=sum(s.seed_params for s in slots if s.stage in LIVE_STAGES),
            fossilized=sum(s.seed_params for s in slots if s.stage in FOSSIL_STAGES),  # withering: still there
        )

    def seed_parameters(self, stages: frozenset[Stage] = LIVE_STAGES) -> dict[str, list[nn.Parameter]]:
        """Parameters of each seed whose slot is in `stages` (per-seed optimisers are built from these)."""
        return {n: list(s.seed.parameters()) for n, s in self._slot_by_name.items() if s.seed is not None and s.stage in stages}

    # ------------------------------------------------------------------ manifest, save, load
    def manifest(self) -> ArchitectureManifest:
        return ArchitectureManifest(host=self.host.host_spec(), slots=[s.manifest() for s in self._slot_by_name.values()])

    def load_manifest(self, manifest: ArchitectureManifest) -> None:
        """Rebuild slot structure (which seeds exist, stage, α) from a manifest; weights come separately."""
        if manifest.format_version != MANIFEST_FORMAT_VERSION:
            raise ValueError(f"manifest format {manifest.format_version} ≠ supported {MANIFEST_FORMAT_VERSION}")
        if [m.name for m in manifest.slots] != list(self._slot_by_name):
            raise ValueError(f"manifest slots {[m.name for m in manifest.slots]} ≠ host slots {list(self._slot_by_name)}")
        p = self._first_param()
        for m in manifest.slots:
            self._slot_by_name[m.name].load_manifest(m, device=p.device, dtype=p.dtype, template=self._template(m.name))

    def save(self, path: str | os.PathLike) -> None:
        """Write manifest + weights atomically (tmp file + rename); loadable with weights_only=True."""
        payload = {
            "format": GROWN_MODEL_FORMAT,
            "manifest": self.manifest().model_dump(mode="json"),
            "kasmina_config": self.config.model_dump(mode="json"),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }
        atomic_torch_save(payload, Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike, host: nn.Module, map_location: str | torch.device = "cpu") -> "MorphogeneticModel":
        """Rebuild a grown model: `host` must be built from the saved manifest's host spec (see `read_manifest`)."""
        payload = torch.load(Path(path), map_location=map_location, weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != GROWN_MODEL_FORMAT:
            raise ValueError(f"{path}: not an Esper grown model (expected format {GROWN_MODEL_FORMAT!r})")
        model = cls(host, KasminaConfig.model_validate(payload["kasmina_config"]))
        model.load_manifest(ArchitectureManifest.model_validate(payload["manifest"]))
        model.load_state_dict(payload["state_dict"])
        return model

    # ------------------------------------------------------------------ snapshots (Governor rollback)
    def snapshot(self) -> dict[str, Any]:
        """Deep copy of structure and weights, kept in memory."""
        return {"manifest": self.manifest(), "state_dict": copy.deepcopy(self.state_dict())}

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Return exactly to a snapshot: seeds germinated since are dropped, culled ones come back."""
        self.load_manifest(snapshot["manifest"])
        self.load_state_dict(snapshot["state_dict"])

    # ------------------------------------------------------------------ internals
    def _template(self, slot: str) -> nn.Module | None:
        """The host module feeding `slot`, if the host offers one (HostProtocol's optional `template_at`)."""
        template_at = getattr(self.host, "template_at", None)
        return template_at(slot) if template_at is not None else None

    def _first_param(self) -> Tensor:
        return next(self.host.parameters())

    def _dispatch(self, event: TelemetryEvent) -> None:
        for listener in self.listeners:
            listener(event)


def plane_action_spec(points: list, host_params: int, config: KasminaConfig) -> ActionSpec:
    """The action layout of a plane: its slots (the host's injection points, in order), blueprints, blend
    choices, and which blueprint each slot may take (its kind and the G0 parameter budget). `config.blueprints`
    must already be resolved (`fitting_blueprints`). Needs no weights: the world's layout comes from a host built
    on the meta device (esper.tolaria.builder.action_spec)."""
    gates = config.gate_config()
    allowed = tuple(
        tuple(
            get_blueprint(b).kind == p.kind
            and get_blueprint(b).param_count(p.channels) <= gates.max_seed_param_ratio * host_params
            for b in config.blueprints
        )
        for p in points
    )
    return ActionSpec(
        audit=config.audit_actions,
        slots=tuple(p.name for p in points),
        blueprints=tuple(config.blueprints),
        tempos=tuple(config.blend.tempos),
        curves=tuple(config.blend.curves),
        blueprint_allowed=allowed,
        slot_widths=tuple(p.channels for p in points),
    )


def read_manifest(path: str | os.PathLike) -> ArchitectureManifest:
    """The architecture manifest of a saved grown model (to build its host before `MorphogeneticModel.load`)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != GROWN_MODEL_FORMAT:
        raise ValueError(f"{path}: not an Esper grown model (expected format {GROWN_MODEL_FORMAT!r})")
    return ArchitectureManifest.model_validate(payload["manifest"])


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same folder, then rename: a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
