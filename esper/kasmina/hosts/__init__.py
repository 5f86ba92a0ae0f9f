"""Concrete hosts and the registry that rebuilds one from a manifest's host spec."""

from __future__ import annotations

from typing import Any

from torch import nn

from esper.kasmina.hosts.cnn import WIDTH_PRESETS, CNNHost
from esper.leyline import HostConfig


def build_host(spec: HostConfig | dict[str, Any]) -> nn.Module:
    """A host from a HostConfig or from a manifest's `host` spec (as written by `host_spec()`)."""
    if isinstance(spec, HostConfig):
        return CNNHost(spec)
    if spec.get("name") == "cnn":
        return CNNHost(HostConfig.model_validate(spec["config"]), image_size=int(spec.get("image_size", 32)))
    raise ValueError(f"unknown host spec {spec.get('name')!r}; known hosts: ['cnn']")


__all__ = ["WIDTH_PRESETS", "CNNHost", "build_host"]
