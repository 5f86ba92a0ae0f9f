"""Evaluate a trained Tamiyo (agent.pt) against random, WAIT-only and the heuristic on the same seeds.

    python experiments/evaluate_tamiyo.py --agent runs/ppo/<run>/agent.pt --episodes 20
    python experiments/evaluate_tamiyo.py --episodes 20                  # baselines only (no agent)
    python experiments/evaluate_tamiyo.py --episodes 8 --controllers wait plan:conv_light@block3 \
        plan:conv_light@block3+conv_heavy@block1   # fixed growth plans: what growth is worth on a world
    python experiments/evaluate_tamiyo.py --agent runs/ppo/<run>/agent.pt --worlds experiments/worlds/heldout_family.yaml
        # held-out worlds of a family: per-world and pooled paired differences

Every controller plays the same evaluation episodes (same world, same episode seeds: identical host init
and data order). Reports mean ± std (and standard error) of the final metric, return, seeds germinated /
fossilized / culled and final parameter ratio; writes JSON + Markdown and plots one agent episode's lifecycle.
Each controller's finished episodes on a world are appended to OUT/partial.jsonl as they finish: after a crash or
a session's end, the same command with --resume plays only what is missing (the results are the same).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from esper.tamiyo.registry import names_help, controller_factory, plan_space



def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", type=Path, default=None, help="agent.pt to evaluate (its world is used unless --preset)")
    p.add_argument("--preset", default=None, help="world preset name or YAML (default: the agent's world, else smoke)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed-base", type=int, default=100_000, help="evaluation episode seeds: base, base+1, …")
    p.add_argument("--controllers", nargs="+", default=["ppo", "ppo-sampled", "random", "wait", "heuristic"],
                   help=names_help())
    p.add_argument("--worlds", type=Path, default=None, metavar="FILE",
                   help="YAML list of named worlds (`worlds: [{name, set: {dotted.path: value}}]`) applied over the "
                        "agent's/preset's world (its family's `vary` dropped); every controller plays the same seeds of "
                        "each; reports per world and pooled over worlds")
    p.add_argument("--plan-space", type=int, default=0, metavar="K",
                   help="also play every fixed plan of 1..K seeds (distinct slots, deepest first, any blueprint) and "
                        "report the plans ranked by mean return: the search for the best single fixed plan")
    p.add_argument("--plan-starts", type=int, nargs="+", default=[0], metavar="EPOCH",
                   help="with --plan-space: start every searched plan at each of these epochs (default 0; e.g. 0 5 10 "
                        "for growth schedules, written plan:…,epoch=E)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: beside the agent, else runs/eval)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted evaluation into the same --out (its partial.jsonl): finished "
                        "(world, controller) episode sets are read back, not played again")
    args = p.parse_args()
    if args.episodes < 1:
        p.error("--episodes must be ≥ 1")
    if args.plan_space < 0:
        p.error("--plan-space must be ≥ 0")
    if min(args.plan_starts) < 0:
        p.error("--plan-starts must be ≥ 0")
    return args


def main() -> None:
    args = _parse()
    from esper.tamiyo.neural import NeuralTamiyo

    agent, make, names, envs, worlds = _setup(args)
    seeds = [args.seed_base + i for i in range(args.episodes)]
    out = args.out or (args.agent.parent / "eval" if args.agent else Path("runs/eval"))
    out.mkdir(parents=True, exist_ok=True)
    cache = EpisodeCache(out / "partial.jsonl", _fingerprint(args, worlds, seeds), args.resume)
    report, rows = _evaluate(args, envs, worlds, make, names, seeds, cache)
    table = ""
    if args.plan_space:
        report["plan_search"], table = _plan_search(report["results"] if args.worlds is None else report["pooled"]["results"])
    report["episodes"] = rows
    (out / "evaluation.json").write_text(json.dumps(report, indent=2))
    md = _markdown(report, len(seeds)) + table
    (out / "evaluation.md").write_text(md)
    cache.path.unlink(missing_ok=True)  # every episode is in evaluation.json now
    print("\n" + md + f"\nwrote {out}/evaluation.json, evaluation.md")
    if agent is not None:
        _plot_episode(next(iter(envs.values())), NeuralTamiyo(agent), seeds[0], out / "agent_episode.png")


def _setup(args):
    """The agent, the controller factories, controller names and the envs (by world name) to play — or a
    one-line error naming what is wrong."""
    from _config import load_preset
    from esper.leyline.experiment import ConfigError
    from esper.leyline.features import feature_names
    from esper.simic.config import TrainTamiyoConfig
    from esper.simic.env import EsperEnv
    from esper.tamiyo.agent_file import AgentFileError, load_agent
    from esper.tolaria.data import DataError

    try:
        agent = load_agent(args.agent) if args.agent else None
        if args.preset or agent is None:
            cfg = load_preset(args.preset or "smoke", args.overrides, TrainTamiyoConfig)
        else:
            cfg = TrainTamiyoConfig.model_validate(agent.provenance["config"])
        env = EsperEnv(cfg.world)
        worlds = _worlds(args.worlds, cfg.world) if args.worlds else {"world": cfg.world}
        envs = {name: env if args.worlds is None else EsperEnv(world) for name, world in worlds.items()}
    except (ConfigError, AgentFileError, DataError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    mismatched = [w for w, e in envs.items() if agent is not None and agent.feature_names != feature_names(e.action_spec)]
    if mismatched:
        sys.exit(f"error: the agent's observation features do not match world(s) {mismatched} (different slots/blueprints?)")
    names = [c for c in args.controllers if agent is not None or "ppo" not in c]
    names += [p for p in plan_space(env.action_spec, args.plan_space, args.plan_starts) if p not in names]
    try:
        make = {c: controller_factory(c, env.action_spec, agent) for c in names}
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    return agent, make, names, envs, worlds


class EpisodeCache:
    """The finished (world, controller) episode sets of one evaluation, appended to `path` as each finishes
    (one JSON line, fsynced), so a resumed run plays nothing twice. A line from another evaluation — different
    agent, worlds, settings or seeds — stops the run rather than mixing results."""

    def __init__(self, path: Path, fingerprint: str, resume: bool) -> None:
        from esper.simic.evaluate import EpisodeStats

        self.path, self.fingerprint, self.done = path, fingerprint, {}
        if path.is_file() and not resume:
            print(f"note: {path} (an interrupted evaluation) is replaced; --resume would continue it", file=sys.stderr)
            path.unlink()
        for line in path.read_text().splitlines() if path.is_file() else []:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the line a crash cut short: that set is played again
            if record.get("fingerprint") != fingerprint:
                sys.exit(f"error: {path} is from a different evaluation (agent, worlds, settings or seeds differ): "
                         "use another --out, or run without --resume to start afresh")
            self.done[(record["world"], record["controller"])] = [EpisodeStats(**e) for e in record["episodes"]]
        if self.done:
            print(f"resuming: {len(self.done)} (world, controller) episode sets already played", flush=True)

    def get(self, world: str, controller: str) -> list | None:
        return self.done.get((world, controller))

    def put(self, world: str, controller: str, stats: list) -> None:
        record = {"fingerprint": self.fingerprint, "world": world, "controller": controller,
                  "episodes": [st.__dict__ for st in stats]}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _fingerprint(args, worlds: dict, seeds: list[int]) -> str:
    """What makes two evaluations the same: the agent file's bytes, every world's config and the seeds."""
    agent = hashlib.sha256(args.agent.read_bytes()).hexdigest() if args.agent else None
    what = {"agent": agent, "worlds": {n: w.model_dump(mode="json") for n, w in worlds.items()}, "seeds": seeds}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def _evaluate(args, envs: dict, worlds: dict, make: dict, names: list[str], seeds: list[int],
              cache: EpisodeCache) -> tuple[dict, list]:
    """Every controller on the same seeds of every world: the report (per world and pooled) and the episodes."""
    from esper.simic.evaluate import summarise

    report, rows, pooled = {"command": " ".join(["python", *sys.argv]), "seeds": seeds}, [], {}
    for wname, wenv in envs.items():
        results, played = _play(wenv, {n: make[n] for n in names}, seeds, "" if args.worlds is None else f"{wname}: ",
                                (cache, wname))
        rows += [st.__dict__ | {"controller": n, "world": wname} for n, sts in played.items() for st in sts]
        entry = {"world": worlds[wname].model_dump(mode="json"), "results": results, "paired": _paired(played)}
        if args.worlds is None:
            report |= entry
        else:
            report.setdefault("worlds", {})[wname] = entry
        for n, sts in played.items():  # pooled: an episode is a (world, seed) pair
            pooled.setdefault(n, []).extend(replace(st, seed=len(report.get("worlds", {})) * 10**6 + st.seed) for st in sts)
    if args.worlds is not None:
        report["pooled"] = {"results": {n: summarise(sts) for n, sts in pooled.items()}, "paired": _paired(pooled)}
        report["rent_response"] = _rent_response(report["worlds"])
    return report, rows


def _markdown(report: dict, n: int) -> str:
    if "worlds" not in report:
        metric = next(iter(report["results"].values()))["metric_name"]
        return _table(report["results"], n) + _paired_table(report["paired"], metric)
    md = "".join(f"## {w}\n\n" + _table(e["results"], n)
                 + _paired_table(e["paired"], next(iter(e["results"].values()))["metric_name"]) + "\n"
                 for w, e in report["worlds"].items())
    pooled = report["pooled"]
    metric = next(iter(pooled["results"].values()))["metric_name"]  # one family, one plane: one kind of task
    return md + f"## Pooled over {len(report['worlds'])} worlds\n\n" + _table(pooled["results"], n * len(report["worlds"])) \
        + _paired_table(pooled["paired"], metric) + _rent_table(report["rent_response"])


def _rent_response(worlds: dict) -> dict:
    """Per controller: across worlds, the Spearman correlation of the world's rent λ with the mean final excess
    parameter ratio (a controller that prices capacity grows less where it is dear), and what it grew where."""
    import pandas as pd

    out = {}
    for name in next(iter(worlds.values()))["results"]:
        rows = [{"world": w, "rent": e["world"]["reward"]["rent_lambda"], "ratio": e["results"][name]["final_excess_ratio"]["mean"],
                 "germinations": e["results"][name]["germinations"]} for w, e in worlds.items()]
        df = pd.DataFrame(rows)
        rho = df["rent"].corr(df["ratio"], method="spearman") if df["rent"].nunique() > 1 and df["ratio"].nunique() > 1 else None
        out[name] = {"spearman_rent_vs_ratio": None if rho is None or rho != rho else float(rho), "worlds": rows}
    return out


def _rent_table(response: dict) -> str:
    lines = ["", "Response to rent across worlds: Spearman ρ(λ, final excess params) (— = no variation), and what "
             "each controller grew per episode in each world", "", "| controller | ρ | growth per world |", "|---|---:|---|"]
    for name, r in response.items():
        rho = "—" if r["spearman_rent_vs_ratio"] is None else f"{r['spearman_rent_vs_ratio']:+.2f}"
        grown = "; ".join(f"{w['world']} (λ {w['rent']:g}): " + (", ".join(f"{g} {k:.1f}" for g, k in w["germinations"].items())
                                                               or "nothing") for w in r["worlds"])
        lines.append(f"| {name} | {rho} | {grown} |")
    return "\n".join(lines) + "\n"


def _worlds(path: Path, base) -> dict:
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


def _play(env, make: dict, seeds: list[int], prefix: str = "", cached: tuple | None = None) -> tuple[dict, dict]:
    """Every controller on the same episode seeds of `env`: summaries and the episodes, by controller.
    `cached` = (EpisodeCache, world name): sets played before are read back, new ones recorded."""
    from esper.simic.evaluate import format_metric, run_episode, summarise

    results, played = {}, {}
    for name, factory in make.items():
        stats = cached[0].get(cached[1], name) if cached else None
        if stats is None:
            controller, stats = factory(), []
            for i, s in enumerate(seeds):
                stats.append(run_episode(env, controller, s))
                print(f"\r{prefix}{name:<12} episode {i + 1}/{len(seeds)}", end="", flush=True)
            if cached:
                cached[0].put(cached[1], name, stats)
        results[name], played[name] = summarise(stats), stats
        r = results[name]
        fm = lambda v: format_metric(v, r["metric_name"])
        print(f"\r{prefix}{name:<12} final {r['metric_name']} {fm(r['final_metric']['mean'])} ± {fm(r['final_metric']['std'])}  "
              f"return {r['episode_return']['mean']:+.3f} ± {r['episode_return']['std']:.3f}  "
              f"germinated {r['germinated']['mean']:.1f}  ops {', '.join(f'{k} {v:.0%}' for k, v in r['op_fraction'].items())}")
    return results, played


def _plan_search(results: dict) -> tuple[list[dict], str]:
    """Plans (and WAIT, the empty plan) ranked by mean return: the best single fixed plan first."""
    from esper.simic.evaluate import format_metric

    ranked = sorted(({"controller": n, "return": r["episode_return"]["mean"], "se": r["episode_return"]["se"],
                      "final_metric": r["final_metric"]["mean"]} for n, r in results.items()
                     if n.startswith("plan:") or n == "wait"), key=lambda x: -x["return"])
    metric = next(iter(results.values()))["metric_name"]
    lines = ["", f"Plan search ({len(ranked)} fixed plans incl. WAIT), by mean return; best: {ranked[0]['controller']}", "",
             f"| plan | return [SE] | final {metric} |", "|---|---:|---:|"]
    lines += [f"| {x['controller']} | {x['return']:+.3f} [{x['se']:.3f}] | {format_metric(x['final_metric'], metric)} |"
              for x in ranked]
    return ranked, "\n".join(lines) + "\n"


def _table(results: dict, n: int) -> str:
    from esper.simic.evaluate import format_metric

    metric = next(iter(results.values()))["metric_name"]
    lines = [f"{n} evaluation episodes per controller (same seeds); mean ± std (standard error in brackets)", "",
             f"| controller | final {metric} | return | germinated | fossilized | culled | final excess params |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        f = lambda k, fmt: f"{format(r[k]['mean'], fmt)} ± {format(r[k]['std'], fmt.lstrip('+'))}"
        fm = lambda k: format_metric(r["final_metric"][k], metric)
        lines.append(f"| {name} | {fm('mean')} ± {fm('std')} [{fm('se')}] | "
                     f"{f('episode_return', '+.3f')} [{r['episode_return']['se']:.3f}] | {f('germinated', '.2f')} | "
                     f"{f('fossilized', '.2f')} | {f('culled', '.2f')} | {f('final_excess_ratio', '.2f')} |")
    return "\n".join(lines) + "\n"


def _paired(played: dict) -> dict:
    """Each trained, heuristic or plan controller against each baseline, per-seed differences (same episodes);
    a trained Tamiyo also against every plan."""
    from esper.simic.evaluate import paired_difference

    out = {}
    for name in [n for n in played if n not in ("random", "wait")]:
        plans = [b for b in played if b.startswith("plan:")] if name.startswith("ppo") else []
        for base in [b for b in ("random", "wait", "heuristic", *plans) if b in played and b != name]:
            out[f"{name} - {base}"] = {key: paired_difference(played[name], played[base], key)
                                        for key in ("final_metric", "episode_return")}
    return out


def _paired_table(paired: dict, metric: str) -> str:
    from esper.simic.evaluate import format_metric

    if not paired:
        return ""
    lines = ["", "Paired differences (same episode seeds): mean [standard error]; ✓ = ahead by more than 2 SE", "",
             f"| comparison | Δ final {metric} | Δ return |", "|---|---:|---:|"]
    for pair, d in paired.items():
        a, r = d["final_metric"], d["episode_return"]
        mark = lambda x: " ✓" if x["beats_by_2se"] else ""
        lines.append(f"| {pair} | {format_metric(a['mean'], metric, signed=True)} [{format_metric(a['se'], metric)}]"
                     f"{mark(a)} | {r['mean']:+.3f} [{r['se']:.3f}]{mark(r)} |")
    return "\n".join(lines) + "\n"


def _plot_episode(env, controller, seed: int, path: Path) -> None:
    import importlib.util

    from esper.nissa import ParquetBackend, TelemetryHub
    from esper.simic.evaluate import run_episode

    telemetry = path.with_suffix(".parquet")
    hub = TelemetryHub([ParquetBackend(telemetry)], controller=controller.name, seed=seed)
    run_episode(env, controller, seed, telemetry=hub)
    hub.close()
    spec = importlib.util.spec_from_file_location("plot_run", Path(__file__).parent / "plot_run.py")
    plot_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot_run)
    plot_run.plot(telemetry, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
