"""Preset lookup shared by the experiment scripts: a name in experiments/presets/ or a path to a YAML file."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from esper.leyline.base import EsperModel
from esper.leyline.experiment import ConfigError, load_config

PRESETS = Path(__file__).parent / "presets"
M = TypeVar("M", bound=EsperModel)


def preset_path(name: str) -> Path:
    """experiments/presets/<name>.yaml, or `name` itself when it is a .yaml/.yml path; unknown → ConfigError."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else PRESETS / f"{name}.yaml"
    if not path.is_file():
        known = sorted(q.stem for q in PRESETS.glob("*.yaml"))
        raise ConfigError(f"unknown preset {name!r}; known: {known} (or give a .yaml path)")
    return path


def load_preset(name: str, overrides: list[str], model: type[M]) -> M:
    """The preset `name` with `key.sub=value` overrides, validated as `model` (errors name the field)."""
    return load_config(preset_path(name), overrides, model=model)
