"""The one argument grammar of every script, and the start-up checks that turn bad input into one line.

Every script that runs a world takes `--preset NAME|PATH` (a name in experiments/presets/ or a YAML file),
`--set dotted.key=value` (repeatable), `--out FOLDER`, `--resume` where a job can continue and
`--print-config`. Before anything starts (Ray, a recording, a first run) the resolved world is checked whole
— its data sources exist and read, its blueprints exist and fit the host, an agent file is an agent — and a
problem ends the script with one line naming the field, exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import NoReturn, TypeVar

from esper.leyline.base import EsperModel
from esper.leyline.experiment import ConfigError, load_config, preset_path
from esper.world import WorldConfig

M = TypeVar("M", bound=EsperModel)


def fail(message: str) -> NoReturn:
    """End a script on a user's mistake: one line on stderr, exit code 2 (as argparse does)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def script_parser(doc: str, *, preset: str | None = "smoke", out: str | None = None,
                  resume: bool = False, out_file: bool = False) -> argparse.ArgumentParser:
    """A script's parser with the shared options: --preset (default `preset`; None: the option is not offered),
    --set, --out (default `out`, described; a file rather than a folder with `out_file`), --resume (if the job
    can continue) and --print-config."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if preset is not None:
        p.add_argument("--preset", default=preset, metavar="NAME|PATH",
                       help=f"world preset: a name in experiments/presets/ or a YAML file (default {preset})")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set world.trainer.epochs=12 (repeatable)")
        p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    if out is not None:
        kind = ("PATH", "output file") if out_file else ("FOLDER", "output folder")
        p.add_argument("--out", type=Path, default=None, metavar=kind[0], help=f"{kind[1]} (default {out})")
    if resume:
        p.add_argument("--resume", action="store_true",
                       help="continue an interrupted job in --out: keep what it finished, do the rest (same settings)")
    return p


class WorldPreset(EsperModel):
    """A preset that is only a world: what a script that trains one fixed world reads (demo_plane.py,
    governor_faults.py); its experiment's own settings stay flags."""

    world: WorldConfig = WorldConfig()
    """The world the script trains."""


def load(parser: argparse.ArgumentParser, args: argparse.Namespace, model: type[M], preset: str | None = None) -> M:
    """The preset (`preset`, else --preset) with --set overrides, validated as `model`, its world checked whole
    (check_world); a bad one ends the script in one line naming the field. A script with checks of its own makes
    them next, then calls `show_config` (--print-config)."""
    try:
        path = preset_path(preset or args.preset)
    except ConfigError as exc:
        fail(f"--preset: {exc}")
    try:
        cfg = load_config(path, args.overrides, model=model)
    except ConfigError as exc:
        fail(str(exc))
    if hasattr(cfg, "world"):
        checked(lambda: check_world(cfg.world))
    return cfg


def show_config(args: argparse.Namespace, cfg: EsperModel) -> None:
    """With --print-config: print the resolved, checked config and end the script."""
    if getattr(args, "print_config", False):
        import yaml

        print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        raise SystemExit(0)


def check_world(world, field: str = "world") -> None:
    """The whole resolved world, before anything starts: blueprints exist and fit the host's points (the action
    layout builds), and every data source the world or its family can draw exists and reads. Raises
    ConfigError/DataError naming the field."""
    from esper.leyline.family import corner_worlds, with_values
    from esper.tolaria.builder import action_spec
    from esper.tolaria.task import check_task_data

    try:
        action_spec(world)
    except ConfigError as exc:
        raise ConfigError(f"{field}.{exc}") from None
    worlds = [world] + [with_values(world, {path: value}) for path, value in corner_worlds(world)
                        if path.split(".")[0] == "data"]
    for w in worlds:
        try:
            check_task_data(w.data)
        except ValueError as exc:  # DataError
            raise ConfigError(f"{field}.{exc}") from None


def checked(action, *errors: type[Exception]):
    """`action()`, with a user's mistake (ConfigError, DataError, AgentFileError, ValueError by default) ending
    the script in one line."""
    from esper.tamiyo.agent_file import AgentFileError

    try:
        return action()
    except (errors or (ConfigError, AgentFileError, ValueError)) as exc:
        fail(str(exc))


def show_progress() -> None:
    """Esper's INFO lines on stdout, unprefixed; other libraries keep their own levels (esper.runtime.quiet drops
    their known noise when Ray starts)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    esper_log = logging.getLogger("esper")
    esper_log.addHandler(handler)
    esper_log.setLevel(logging.INFO)
    esper_log.propagate = False
