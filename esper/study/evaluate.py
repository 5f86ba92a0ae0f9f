"""Controllers side by side on the same evaluation episodes: per world and pooled, paired, ranked plans, rent response.

What `experiments/evaluate_tamiyo.py` runs. Every controller plays the same episode seeds of each world (identical
host init and data order), so differences are paired by seed. Each finished (world, controller) episode set is
appended to the evaluation's log at once (esper/runlog.py): a resumed evaluation plays only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, replace
from pathlib import Path

from esper.runlog import ResumableLog
from esper.study.episodes import EpisodeStats, compare_paired, format_metric, play_set, run_episode, summarise

log = logging.getLogger(__name__)
BASELINES = ("random", "wait")
"""Controllers every other one is paired against (and the heuristic, when it played)."""


def agent_digest(path: Path | None) -> str | None:
    """What identifies an agent in a log: its file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path else None


def play_controllers(env, names: list[str], seeds: list[int], agent=None, log_: ResumableLog | None = None,
                     world: str = "world") -> dict[str, list[EpisodeStats]]:
    """Every controller on the same episode seeds of `env`, by name; sets already in `log_` are read back."""
    done = {r["controller"]: r["episodes"] for r in (log_.records if log_ else []) if r["world"] == world}
    played = {}
    for name in names:
        if name in done:
            played[name] = [EpisodeStats(**e) for e in done[name]]
        else:
            played[name] = play_set(env, name, seeds, agent, progress=world)
            if log_ is not None:
                log_.append({"world": world, "controller": name, "episodes": [asdict(st) for st in played[name]]})
        r = summarise(played[name])
        fm = lambda v: format_metric(v, r["metric_name"])
        log.info(f"{world}: {name:<12} final {r['metric_name']} {fm(r['final_metric']['mean'])} ± "
                 f"{fm(r['final_metric']['std'])}  return {r['episode_return']['mean']:+.3f} ± "
                 f"{r['episode_return']['std']:.3f}  germinated {r['germinated']['mean']:.1f}")
    return played


def paired_with_baselines(played: dict[str, list[EpisodeStats]]) -> dict:
    """Each controller that is not a baseline against random, WAIT and the heuristic (same episodes); a trained
    Tamiyo also against every plan that played."""
    out = {}
    for name in [n for n in played if n not in BASELINES]:
        plans = [b for b in played if b.startswith("plan:")] if name.startswith("ppo") else []
        bases = [b for b in (*BASELINES, "heuristic", *plans) if b in played and b != name]
        out |= compare_paired(played, name, bases)
    return out


def evaluate_worlds(envs: dict, worlds: dict, names: list[str], seeds: list[int], agent, log_: ResumableLog | None,
                    named: bool) -> tuple[dict, list[dict]]:
    """Every controller on the same seeds of every world: the report (per world, and pooled when the worlds are
    `named` ones) and one row per episode."""
    report, rows, pooled = {"seeds": seeds}, [], {}
    for wname, env in envs.items():
        played = play_controllers(env, names, seeds, agent, log_, wname)
        rows += [asdict(st) | {"controller": n, "world": wname} for n, sts in played.items() for st in sts]
        entry = {"world": worlds[wname].model_dump(mode="json"),
                 "results": {n: summarise(sts) for n, sts in played.items()}, "paired": paired_with_baselines(played)}
        if not named:
            report |= entry
            continue
        report.setdefault("worlds", {})[wname] = entry
        for n, sts in played.items():  # pooled: an episode is a (world, seed) pair
            pooled.setdefault(n, []).extend(replace(st, seed=len(report["worlds"]) * 10**6 + st.seed) for st in sts)
    if named:
        report["pooled"] = {"results": {n: summarise(sts) for n, sts in pooled.items()},
                            "paired": paired_with_baselines(pooled)}
        report["rent_response"] = rent_response(report["worlds"])
    return report, rows


def rank_plans(results: dict) -> list[dict]:
    """Plans (and WAIT, the empty plan) ranked by mean return: the best single fixed plan first."""
    return sorted(({"controller": n, "return": r["episode_return"]["mean"], "se": r["episode_return"]["se"],
                    "final_metric": r["final_metric"]["mean"]} for n, r in results.items()
                   if n.startswith("plan:") or n == "wait"), key=lambda x: -x["return"])


def rent_response(worlds: dict) -> dict:
    """Per controller: across worlds, the Spearman correlation of the world's rent λ with the mean final excess
    parameter ratio (a controller that prices capacity grows less where it is dear), and what it grew where."""
    import pandas as pd

    out = {}
    for name in next(iter(worlds.values()))["results"]:
        rows = [{"world": w, "rent": e["world"]["reward"]["rent_lambda"],
                 "ratio": e["results"][name]["final_excess_ratio"]["mean"],
                 "germinations": e["results"][name]["germinations"]} for w, e in worlds.items()]
        df = pd.DataFrame(rows)
        varies = df["rent"].nunique() > 1 and df["ratio"].nunique() > 1
        rho = df["rent"].corr(df["ratio"], method="spearman") if varies else None
        out[name] = {"spearman_rent_vs_ratio": None if rho is None or rho != rho else float(rho), "worlds": rows}
    return out


def named_worlds(path: Path, base) -> dict:
    """The named worlds of a --worlds file, each `base` with its values set (a plain world: no family)."""
    import yaml

    from esper.leyline.experiment import ConfigError
    from esper.leyline.family import with_values

    if not path.is_file():
        raise ConfigError(f"worlds file not found: {path}")
    entries = (yaml.safe_load(path.read_text()) or {}).get("worlds")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) and e.get("name") for e in entries):
        raise ConfigError(f"{path}: expected `worlds:` a non-empty list of {{name: ..., set: {{dotted.path: value}}}}")
    out = {}
    for e in entries:
        try:
            out[str(e["name"])] = with_values(base, dict(e.get("set") or {}))
        except (ValueError, ConfigError) as exc:
            raise ConfigError(f"{path}: world {e['name']!r}: {exc}") from None
    return out


def load_agent_checked(path: Path | None, world=None):
    """agent.pt, or None; with `world`, its observation features must match the world's plane."""
    from esper.leyline.experiment import ConfigError
    from esper.leyline.features import feature_names
    from esper.tamiyo.agent_file import load_agent
    from esper.tolaria.builder import action_spec

    if path is None:
        return None
    agent = load_agent(path)
    if world is not None and agent.feature_names != feature_names(action_spec(world)):
        raise ConfigError(f"--agent: {path}'s observation features do not match the world's plane "
                          "(different slots or blueprints?)")
    return agent


def run_evaluation(world, agent_path: Path | None, controllers: list[str], seeds: list[int], out: Path,
                   resume: bool = False, worlds_file: Path | None = None, plan_space: int = 0,
                   plan_starts: list[int] = (0,)) -> dict:
    """evaluate_tamiyo: every controller (and every plan of 1..`plan_space` seeds) on `seeds` of `world`, or of
    each named world of `worlds_file`; writes evaluation.json / evaluation.md into `out` and returns the report.
    Bad input (agent, worlds, controllers, a log of another evaluation) raises ValueError before any episode."""
    from esper.simic.env import EsperEnv
    from esper.study.report import evaluation_markdown
    from esper.tamiyo.registry import controller_factory, needs_agent, plan_space as all_plans
    from esper.tolaria.builder import action_spec

    agent = load_agent_checked(agent_path, world)
    worlds = named_worlds(worlds_file, world) if worlds_file else {"world": world}
    spec = action_spec(world)
    names = [c for c in controllers if agent is not None or not needs_agent(c)]
    names += [p for p in all_plans(spec, plan_space, plan_starts) if p not in names]
    for c in names:
        controller_factory(c, spec, agent)  # every name is checked before the first episode
    identity = {"agent": agent_digest(agent_path), "seeds": seeds,  # controllers may be added on a resume
                "worlds": {n: w.model_dump(mode="json") for n, w in worlds.items()}}
    log_ = ResumableLog(out / "episodes.jsonl", identity, resume)
    envs = {name: EsperEnv(w) for name, w in worlds.items()}
    report, rows = evaluate_worlds(envs, worlds, names, seeds, agent, log_, named=worlds_file is not None)
    if plan_space:
        report["plan_search"] = rank_plans((report.get("pooled") or report)["results"])
    report["episodes"] = rows
    (out / "evaluation.json").write_text(json.dumps(report, indent=2))
    (out / "evaluation.md").write_text(evaluation_markdown(report))
    if agent is not None:
        plot_agent_episode(next(iter(envs.values())), agent, seeds[0], out / "agent_episode.png")
    return report


def plot_agent_episode(env, agent, seed: int, path: Path) -> None:
    """One greedy episode of the agent, its telemetry beside the picture of its lifecycle."""
    from esper.nissa import ParquetBackend, TelemetryHub
    from esper.nissa.plot import plot_lifecycle
    from esper.tamiyo.neural import NeuralTamiyo

    controller, telemetry = NeuralTamiyo(agent), path.with_suffix(".parquet")
    hub = TelemetryHub([ParquetBackend(telemetry)], controller=controller.name, seed=seed)
    run_episode(env, controller, seed, telemetry=hub)
    hub.close()
    plot_lifecycle(telemetry, path)
