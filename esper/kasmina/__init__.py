"""Kasmina: the morphogenetic plane — host protocol, seed slots, blueprints, blending, isolation, gates."""

from esper.kasmina.blueprints import BLUEPRINTS, Blueprint, get_blueprint
from esper.kasmina.gates import GATE_FOR, GateResult, check_gate
from esper.kasmina.model import MorphogeneticModel, ParamCounts, atomic_torch_save, read_manifest
from esper.kasmina.protocol import HostProtocol, Inject, InjectionPoint
from esper.kasmina.slot import GateClosedError, IllegalCommandError, SeedSlot
from esper.kasmina.wrap import WrappedHost, load_wrapped, wrap

__all__ = [
    "BLUEPRINTS", "GATE_FOR", "Blueprint", "GateClosedError", "GateResult", "HostProtocol", "IllegalCommandError",
    "Inject", "InjectionPoint", "MorphogeneticModel", "ParamCounts", "SeedSlot", "WrappedHost",
    "atomic_torch_save", "check_gate", "get_blueprint", "load_wrapped", "read_manifest", "wrap",
]
