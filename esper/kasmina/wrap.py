"""`esper.wrap`: grow any unmodified `nn.Module` at named submodules, without writing a HostProtocol class.

    net = torchvision.models.resnet18(num_classes=10)
    model = esper.wrap(net, points=["layer2", "layer3"], example_input=torch.randn(2, 3, 32, 32))
    model.germinate("layer2", "conv_light")                     # a MorphogeneticModel like any other
    model.save("grown.pt")
    again = load_wrapped("grown.pt", torchvision.models.resnet18(num_classes=10), ["layer2", "layer3"],
                         example_input=torch.randn(2, 3, 32, 32))

A forward hook on each point's submodule hands its output h to the plane's `inject`; the slot returns h + α·f(h)
(SeedSlot's blend is already residual), and the hook's return value replaces the submodule's output.
"""

from __future__ import annotations

import difflib
import logging
import os
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from esper.kasmina.model import MorphogeneticModel, fitting_blueprints, read_manifest
from esper.kasmina.protocol import Inject, InjectionPoint
from esper.kasmina.config import KasminaConfig

logger = logging.getLogger(__name__)

HOST_NAME = "wrapped"
"""`host_spec()["name"]` of a wrapped model (no registered builder: `load_wrapped` takes the bare model instead)."""


def point_name(dotted: str) -> str:
    """Slot name of the submodule `dotted` (slot names are dot-free: `blocks.1` → `blocks_1`)."""
    return dotted.replace(".", "_")


class _PointHook:
    """The forward hook at one point: passes the submodule's output to the running pass's `inject`.

    A plain object, not a closure, so that `copy.deepcopy` does the right thing: copying the whole host (the FLOP
    counter does) rebinds the hook to the copy; copying the submodule alone (a `block_copy` seed copying its
    template) gives a detached hook that does nothing — otherwise the seed would re-enter its own slot."""

    __slots__ = ("host", "name")

    def __init__(self, host: WrappedHost | None, name: str) -> None:
        self.host, self.name = host, name

    def __call__(self, module: nn.Module, args: Any, output: Any) -> Any:
        inject = None if self.host is None else self.host._inject
        if inject is None:  # outside forward_through (the bare model, or a detached copy): output untouched
            return None
        return inject(self.name, output)

    def __deepcopy__(self, memo: dict) -> _PointHook:
        return _PointHook(None if self.host is None else memo.get(id(self.host)), self.name)


class WrappedHost(nn.Module):
    """HostProtocol over an unmodified `model`: one injection point at the output of each submodule in `points`
    (dotted names as in `model.named_modules()`), its kind and shape read from one probe pass on `example_input`.
    Slot names are the dotted names with "." → "_" (`point_names` maps them back). One forward at a time: the
    hooks read the running pass's `inject` from the host."""

    def __init__(self, model: nn.Module, points: Sequence[str], example_input: Tensor) -> None:
        super().__init__()
        if not isinstance(example_input, Tensor):
            raise TypeError(f"example_input must be a tensor (one batch of the model's input), got {type(example_input).__name__}")
        modules = _resolve(model, points)
        self.model = model
        self.point_names: dict[str, str] = {point_name(d): d for d in modules}
        """slot name → dotted submodule name."""
        self._inject: Inject | None = None
        for dotted, module in modules.items():  # registered once; forward_through only swaps `_inject`
            module.register_forward_hook(_PointHook(self, point_name(dotted)))
        try:
            self._points = _probe(self, example_input)
        except BaseException:
            self.remove_hooks()  # a failed wrap leaves the user's model as it was
            raise

    def injection_points(self) -> tuple[InjectionPoint, ...]:
        return self._points

    def forward_through(self, x: Tensor, inject: Inject) -> Any:
        self._inject = inject
        try:
            return self.model(x)
        finally:
            self._inject = None  # the bare model, called directly, runs untouched

    def forward(self, x: Tensor) -> Any:
        """The bare model (no plane)."""
        return self.model(x)

    def template_at(self, point: str) -> nn.Module:
        """The submodule whose output feeds `point`. Blueprints that copy it decide what they accept: `block_copy`
        takes only an esper transformer `Block` (shape-preserving) and refuses anything else at germination."""
        return self.model.get_submodule(self.point_names[point])

    def host_spec(self) -> dict[str, Any]:
        """What the manifest records: the model's class and the points. It cannot rebuild an arbitrary model;
        `load_wrapped` checks a freshly built one against it."""
        cls = type(self.model)
        return {"name": HOST_NAME, "model": f"{cls.__module__}.{cls.__qualname__}",
                "points": {p.name: self.point_names[p.name] for p in self._points}}

    def remove_hooks(self) -> None:
        """Take this host's hooks off the model (it then runs as if never wrapped; the plane no longer grows)."""
        for module in self.model.modules():
            hooks = module._forward_hooks
            for key in [k for k, h in hooks.items() if isinstance(h, _PointHook) and h.host is self]:
                del hooks[key]


def _resolve(model: nn.Module, points: Sequence[str]) -> dict[str, nn.Module]:
    """dotted name → submodule for each point, in the order given; one-line errors name the offender."""
    if isinstance(points, str) or not points:
        raise ValueError(f"points must be a non-empty list of submodule names (e.g. ['layer2']), got {points!r}")
    named = dict(model.named_modules(remove_duplicate=False))
    named.pop("", None)  # the model itself is no point: its output is the plane's output
    resolved: dict[str, nn.Module] = {}
    slots: dict[str, str] = {}
    for dotted in points:
        if dotted not in named:
            close = difflib.get_close_matches(str(dotted), named, n=5) or list(named)[:5]
            raise ValueError(f"point {dotted!r} is not a submodule of {type(model).__name__}; close names: {close}")
        if dotted in resolved:
            raise ValueError(f"duplicate point {dotted!r} in points {list(points)}")
        clash = slots.setdefault(point_name(dotted), dotted)
        if clash != dotted:
            raise ValueError(f"duplicate point: {clash!r} and {dotted!r} both make slot name {point_name(dotted)!r}")
        if any(isinstance(h, _PointHook) and h.host is not None for h in named[dotted]._forward_hooks.values()):
            raise ValueError(f"point {dotted!r} is already wrapped by another esper.wrap; wrap a freshly built model")
        resolved[dotted] = named[dotted]
    return resolved


def _probe(host: WrappedHost, x: Tensor) -> tuple[InjectionPoint, ...]:
    """Injection points from one eval-mode, no-grad pass: each point's output shape, in the order they run."""
    shapes: dict[str, list[tuple[int, ...]]] = {}

    def record(name: str, h: Any) -> Any:
        if not isinstance(h, Tensor):
            raise ValueError(f"point {host.point_names[name]!r} returned {type(h).__name__}, not a tensor; "
                             "wrap grows at submodules whose output is one tensor")
        shapes.setdefault(name, []).append(tuple(h.shape))
        return h

    modes = {m: m.training for m in host.model.modules()}  # per module: some may be frozen in eval on purpose
    host.model.eval()
    try:
        with torch.no_grad():
            host.forward_through(x, record)
    finally:
        for m, mode in modes.items():
            m.training = mode
    missing = [d for n, d in host.point_names.items() if n not in shapes]
    if missing:
        raise ValueError(f"points {missing} were never reached by the forward pass on example_input")
    repeated = [host.point_names[n] for n, s in shapes.items() if len(s) > 1]
    if repeated:
        raise ValueError(f"points {repeated} run more than once per forward pass; a slot grows at a submodule called once")
    return tuple(_point(name, s[0], host.point_names[name]) for name, s in shapes.items())  # first-call order


def _point(name: str, shape: tuple[int, ...], dotted: str) -> InjectionPoint:
    """The point's kind from its output's rank (3-D outputs are read as tokens, channels last)."""
    if len(shape) == 4:  # (B, C, H, W)
        return InjectionPoint(name, shape[1], "conv2d", spatial=(shape[2], shape[3]))
    if len(shape) == 3:  # (B, T, D)
        return InjectionPoint(name, shape[2], "tokens", tokens=shape[1])
    if len(shape) == 2:  # (B, D)
        return InjectionPoint(name, shape[1], "vector")
    raise ValueError(f"point {dotted!r} outputs shape {list(shape)}; wrap grows at (B, C, H, W), (B, T, D) or (B, D) outputs")


def wrap(model: nn.Module, points: Sequence[str], kasmina: KasminaConfig | dict | None = None, *,
         example_input: Tensor) -> MorphogeneticModel:
    """`model` as a MorphogeneticModel that grows at the submodules `points` (dotted names as in
    `model.named_modules()`, e.g. "layer2", "blocks.1"). The model is used as is, not copied or modified: a forward
    hook on each point hands the submodule's output h to its slot, whose output h + α·f(h) (f zero at graft)
    replaces it, so germinating preserves the function. Slot names are the dotted names with "." → "_"
    ("blocks.1" → slot "blocks_1"; `model.host.point_names` maps back).

    `example_input`: one batch of the model's input; a single eval-mode, no-grad pass on it (training modes are
    restored) reads each point's kind: (B, C, H, W) → conv2d, (B, T, D) → tokens, (B, D) → vector. The model takes
    one tensor; the Trainer's fused counterfactual pass also needs the code after a point to be batch-agnostic
    (branches ride along the batch dimension).

    Save with `model.save(path)`. A manifest cannot rebuild an arbitrary model, so to load, build the bare model
    afresh and call `load_wrapped(path, bare_model, points, example_input=…)`: it checks the model class and points
    against the saved spec, regrows the seeds and loads every weight (the model's too).

    Errors (one line, naming the offender): a point that is not a submodule (close names listed), a duplicate
    point, a point whose output is not a tensor, or not 2-, 3- or 4-D, or never computed on `example_input`, a point
    called twice per pass, a point already wrapped, and `kasmina.blueprints` any of which fits no point's kind."""
    config = KasminaConfig.model_validate(kasmina) if isinstance(kasmina, dict) else kasmina or KasminaConfig()
    host = WrappedHost(model, points, example_input)
    try:
        fitting_blueprints(config.blueprints, list(host.injection_points()), every=True)
        grown = MorphogeneticModel(host, config)
    except BaseException:
        host.remove_hooks()
        raise
    logger.debug("wrapped %s at %s", type(model).__name__, host.injection_points())
    return grown


def load_wrapped(path: str | os.PathLike, model: nn.Module, points: Sequence[str], *, example_input: Tensor,
                 map_location: str | torch.device = "cpu") -> MorphogeneticModel:
    """A grown model saved from `wrap(...)`: `model` freshly built like the saved one (same class and shapes) and
    the same `points`; its seeds, their stages and every weight come from `path` (read with weights_only=True)."""
    host = WrappedHost(model, points, example_input)
    try:
        saved, spec = read_manifest(path).host, host.host_spec()
        if saved != spec:
            raise ValueError(f"{path}: saved from {saved.get('model')} with points {saved.get('points')}, "
                             f"got {spec['model']} with points {spec['points']}")
        return MorphogeneticModel.load(path, host, map_location)
    except BaseException:
        host.remove_hooks()
        raise
