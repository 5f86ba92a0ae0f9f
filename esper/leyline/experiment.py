"""The loader of YAML presets with dotted command-line overrides (`--set world.trainer.epochs=12`), and ConfigError:
every config error a user can make is reported through it, naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from esper.leyline.base import EsperModel

M = TypeVar("M", bound=EsperModel)


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the field."""


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """tree["a"]["b"] = value for key "a.b" (missing sections are created; pydantic validates the result)."""
    node = tree
    *parents, leaf = key.strip().split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
    node[leaf] = value


def apply_override(tree: dict[str, Any], dotted: str) -> None:
    """Apply one command-line override `key.sub=value` (the value is read as YAML: 12, 0.5, true, [1, 2], null)."""
    if "=" not in dotted:
        raise ConfigError(f"override {dotted!r} must look like key.sub=value")
    key, raw = dotted.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {dotted!r}: the value is not valid YAML ({exc})") from None
    set_dotted(tree, key, value)


def format_validation_error(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors())


PRESETS = Path(__file__).resolve().parents[2] / "experiments" / "presets"
"""The YAML presets; each one's header comment gives the command that runs it."""


def preset_path(name: str) -> Path:
    """experiments/presets/<name>.yaml, or `name` itself when it is a .yaml/.yml path; unknown → ConfigError."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else PRESETS / f"{name}.yaml"
    if not path.is_file():
        known = sorted(q.stem for q in PRESETS.glob("*.yaml"))
        raise ConfigError(f"unknown preset {name!r}; known: {known} (or give a .yaml path)")
    return path


def load_config(path: str | Path | None, overrides: list[str] | None = None, *, model: type[M]) -> M:
    """Validate a YAML preset plus `key.sub=value` overrides; errors name the offending field."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
    for item in overrides or []:
        apply_override(tree, item)
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(f"invalid config: {format_validation_error(exc)}") from None
