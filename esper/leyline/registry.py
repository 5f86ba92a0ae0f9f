"""Config families chosen by a name field — hosts by `name`, tasks by `task` — and their base classes.

A world config holds a host and a task config; which class validates them is looked up here by the value
of their name field, so a new host or task registers its config class and every config path accepts it
(YAML presets, `--set host.name=…`, agent manifests) without an edit to the world config.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from esper.leyline.base import EsperModel

M = TypeVar("M", bound=BaseModel)


class ConfigFamily(Generic[M]):
    """Config classes of one family, keyed by the default of their discriminator field, each with the builder
    that makes what it configures: registered together, so no config validates without a builder behind it."""

    def __init__(self, kind: str, key: str, default: str) -> None:
        self.kind, self.key, self.default = kind, key, default
        """kind: what the family is called in errors; key: the discriminator field; default: its value when omitted."""
        self._classes: dict[str, type[M]] = {}
        self._builders: dict[type[M], Callable[..., Any]] = {}

    def register(self, cls: type[M], build: Callable[..., Any]) -> None:
        """Add `cls` and its builder; the discriminator field's default is its name."""
        name = cls.model_fields[self.key].default
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__name__}.{self.key} needs a string default: the {self.kind}'s registered name")
        known = self._classes.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(f"{self.kind} {name!r} is already registered by {known.__qualname__}")
        self._classes[name] = cls
        self._builders[cls] = build

    def builder(self, config: M) -> Callable[..., Any]:
        """The builder registered with `config`'s class."""
        build = self._builders.get(type(config))
        if build is None:
            raise ValueError(f"{type(config).__name__} is not a registered {self.kind} config; registered: {self.names()}")
        return build

    def names(self) -> list[str]:
        return sorted(self._classes)

    def validate(self, value: Any) -> Any:
        """A config instance from a dict (dispatching on the key) or an instance of a registered class."""
        if isinstance(value, BaseModel):
            if type(value) not in self._classes.values():
                raise ValueError(f"{type(value).__name__} is not a registered {self.kind} config")
            return value
        if not isinstance(value, dict):
            return value  # let pydantic report the type error
        name = value.get(self.key, self.default)
        cls = self._classes.get(name)
        if cls is None:
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {self.names()}")
        try:
            return cls.model_validate(value)
        except ValidationError as exc:  # re-raised as a plain error: pydantic then prefixes the field's path
            raise ValueError("; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())) from None


class HostConfig(EsperModel):
    """Base of every host's config: `name` picks the host (esper.kasmina.hosts.register_host adds one, with its
    builder)."""

    name: str
    """Host family."""


class TaskConfig(EsperModel):
    """Base of every task's data config: `task` picks the task (esper.tolaria.task.register_task adds one)."""

    task: str
    """Task family."""
    metric_name: ClassVar[str] = "metric"
    """What the task's primary metric is called (its Task reports it; tables format by it)."""


HOST_CONFIGS: ConfigFamily[HostConfig] = ConfigFamily("host", key="name", default="cnn")
TASK_CONFIGS: ConfigFamily[TaskConfig] = ConfigFamily("task", key="task", default="image_classification")
