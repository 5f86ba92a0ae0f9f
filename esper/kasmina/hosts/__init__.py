"""Concrete hosts and their registry: a host config (or a manifest's host spec) → the host module."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from esper.kasmina.hosts.cnn import WIDTH_PRESETS, CNNHost, CNNHostConfig
from esper.kasmina.hosts.transformer import TransformerHost, TransformerHostConfig
from esper.leyline.registry import HOST_CONFIGS, HostConfig

HostBuilder = Callable[..., nn.Module]
"""build(config, **extras) → host module; `extras` are the other keys of the host's own `host_spec()`."""


def register_host(config_cls: type[HostConfig], build: HostBuilder) -> None:
    """Make a host available to every world: `config_cls` joins HOST_CONFIGS (worlds then accept
    `host: {name: <name>, …}`) and `build` makes the module. The module implements HostProtocol, and its
    `host_spec()` returns {"name": …, "config": config.model_dump(mode="json"), …extras} so a saved grown model
    can be rebuilt."""
    HOST_CONFIGS.register(config_cls, build)


def build_host(spec: HostConfig | dict[str, Any]) -> nn.Module:
    """A host from its config, or from a manifest's `host` spec (as written by the host's `host_spec()`)."""
    if isinstance(spec, dict):
        try:
            config = HOST_CONFIGS.validate({"name": spec.get("name"), **spec.get("config", {})})
        except ValueError as exc:
            raise ValueError(f"cannot rebuild host from manifest spec: {exc}") from None
        extras = {k: v for k, v in spec.items() if k not in ("name", "config")}
    else:
        config, extras = spec, {}
    return HOST_CONFIGS.builder(config)(config, **extras)


register_host(CNNHostConfig, CNNHost)
register_host(TransformerHostConfig, TransformerHost)

__all__ = ["WIDTH_PRESETS", "CNNHost", "CNNHostConfig", "TransformerHost", "TransformerHostConfig", "build_host",
           "register_host"]
