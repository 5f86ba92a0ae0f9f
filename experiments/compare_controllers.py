"""The fair comparison: does growth help at an equal budget?

    python experiments/compare_controllers.py --quick           # = --config experiments/presets/compare_quick.yaml
    python experiments/compare_controllers.py --config experiments/presets/compare_synthetic.yaml
    python experiments/compare_controllers.py --config experiments/presets/compare_full.yaml   # GPU protocol
    python experiments/compare_controllers.py --set world.trainer.epochs=4 --set seeds=[0,1,2] --set world.host.preset=small
    python experiments/compare_controllers.py                   # the smoke world (synthetic task, tiny host), 3 seeds
    python experiments/compare_controllers.py --quick --budget-from static:15     # equal compute (training FLOPs)

Arms (every arm: identical epochs, optimiser, LR schedule, host init and data order per seed):
  static      the host alone (WAIT-only controller)
  capacity    the host with the heuristic's preferred blueprint already fossilized in its preferred slot at
              epoch 0, trained jointly from the start (capacity control: same extra parameters, no growth)
  schedule    germinate that blueprint in that slot at epoch `schedule_epoch`, fixed tempo, advance on gates;
              `schedule_plan: block_copy@block1+block_copy@block2` grows several seeds instead (one per
              decision from `schedule_epoch`; the capacity arm then starts with all of them)
  heuristic   heuristic Tamiyo (esper/tamiyo/heuristic.py)
  ppo         a trained Tamiyo: --set agent=runs/ppo/<run>/agent.pt --set 'arms=[static,heuristic,ppo]'
Every arm is a Run of the same world (the one every controller and the RL env use). Writes results.csv,
summary.json, table.md (with differences paired by seed against the capacity and static arms), acc_vs_params.png,
metric_vs_flops.png and per-run telemetry under --out. Each finished run is appended to --out/runs.jsonl at once:
after a crash, the same command with --resume plays only the runs that are missing.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Literal

import torch
import yaml
from pydantic import Field, field_validator, model_validator

from esper.kasmina import MorphogeneticModel
from esper.leyline import Stage
from esper.leyline.base import EsperModel
from esper.leyline.experiment import ConfigError, load_config
from esper.leyline.features import feature_names
from esper.leyline.world import WorldConfig
from esper.nissa import ConsoleBackend, ParquetBackend, TelemetryHub
from esper.provenance import code_version
from esper.runlog import append_log, read_log
from esper.tamiyo import HeuristicConfig, HeuristicTamiyo, PlanTamiyo, WaitTamiyo
from esper.tamiyo.agent_file import AgentFileError, load_agent
from esper.tamiyo.neural import NeuralTamiyo
from esper.tolaria.builder import build_model, build_run, build_world_task
from esper.tolaria.flops import host_epoch_flops
from esper.tolaria.data import DataError
from esper.tolaria.run import run_training
from esper.tolaria.trainer import pick_device

sys.path.insert(0, str(Path(__file__).parent))
from _compute import compute_to_target, paired_table, plot_curves  # noqa: E402


class ExperimentConfig(EsperModel):
    """Root config of the fair comparison: one world, the arms that play it, the seeds."""

    world: WorldConfig = WorldConfig()
    """What every arm trains: task data, host, plane, trainer (the equal budget), Governor (its `reward` is
    not used here). Set `val_images: null` to validate on the whole validation split."""
    heuristic: HeuristicConfig = HeuristicConfig()
    """Heuristic Tamiyo thresholds (also pick the capacity and schedule arms' slot and blueprint)."""
    seeds: list[int] = [0, 1, 2]
    """Training seeds (host init, data order); ≥ 3 for any claim."""
    arms: list[Literal["static", "capacity", "schedule", "heuristic", "ppo"]] = ["static", "capacity", "schedule", "heuristic"]
    """Controllers to compare ('ppo' = the greedy policy in `agent`)."""
    agent: str | None = None
    """agent.pt for the 'ppo' arm (its features must match this plane's slots and blueprints)."""
    schedule_epoch: int = Field(2, ge=0)
    """Germination epoch of the fixed-schedule arm (its first seed's, with `schedule_plan`)."""
    schedule_plan: str | None = None
    """The seeds the schedule and capacity arms grow, 'blueprint@slot+…' in order (default: the heuristic's one
    preferred blueprint in its preferred slot)."""

    @field_validator("schedule_plan")
    @classmethod
    def _plan_parses(cls, text: str | None) -> str | None:
        if text is not None:
            PlanTamiyo.parse_pairs(text)  # a malformed plan fails at start-up (checked against the plane at run time)
        return text

    @model_validator(mode="after")
    def _agent_for_ppo(self) -> "ExperimentConfig":
        if ("ppo" in self.arms) != (self.agent is not None):
            raise ValueError("the 'ppo' arm and `agent` (an agent.pt path) go together")
        return self

    @model_validator(mode="after")
    def _decisions_for_the_budget(self) -> "ExperimentConfig":
        """With a budget in host epochs, `world.trainer.epochs` only caps the decisions: the static host needs
        one per budgeted epoch (and one more that ends it), every other arm fewer."""
        t = self.world.trainer
        if t.budget_host_epochs is not None and t.epochs <= t.budget_host_epochs:
            self.world.trainer = t.model_copy(update={"epochs": math.ceil(t.budget_host_epochs) + 1})
        return self


QUICK_PRESET = Path(__file__).parent / "presets" / "compare_quick.yaml"


def _parse() -> tuple[argparse.Namespace, ExperimentConfig]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=None, help="YAML preset (see experiments/presets/)")
    p.add_argument("--quick", action="store_true", help=f"shorthand for --config {QUICK_PRESET}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set world.trainer.epochs=12 (repeatable)")
    p.add_argument("--eval-data", default=None, metavar="PATH.parquet",
                   help="external evaluation set, reported beside validation (= --set world.data.eval_data=PATH)")
    p.add_argument("--budget-flops", type=float, default=None, metavar="FLOPS",
                   help="equal compute: every arm trains until it has spent this many training FLOPs, its LR schedule "
                        "running over them (= --set world.trainer.budget_flops=FLOPS)")
    p.add_argument("--budget-from", default=None, metavar="static:EPOCHS",
                   help="equal compute: the budget is what the static host spends in EPOCHS epochs "
                        "(= --set world.trainer.budget_host_epochs=EPOCHS)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/compare/<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the comparison in --out: keep its finished runs, play the rest (same config only)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = p.parse_args()
    if args.quick and args.config:
        p.error("--quick and --config are exclusive")
    if args.resume and args.out is None:
        p.error("--resume needs the --out folder of the comparison to continue")
    if args.eval_data:
        args.overrides.append(f"world.data.eval_data={args.eval_data}")
    if args.budget_flops is not None:
        args.overrides.append(f"world.trainer.budget_flops={args.budget_flops}")
    if args.budget_from is not None:
        arm, _, epochs = args.budget_from.partition(":")
        if arm != "static" or not epochs.isdigit() or int(epochs) < 1 or args.budget_flops is not None:
            p.error("--budget-from takes static:EPOCHS (EPOCHS ≥ 1), and not with --budget-flops")
        args.overrides.append(f"world.trainer.budget_host_epochs={epochs}")
    try:
        cfg = load_config(QUICK_PRESET if args.quick else args.config, args.overrides, model=ExperimentConfig)
    except ConfigError as exc:
        p.error(str(exc))
    if len(cfg.seeds) < 3:
        print("warning: fewer than 3 seeds — mean ± std will not support a claim", file=sys.stderr)
    args.out = args.out or Path("runs/compare") / time.strftime("%Y%m%d-%H%M%S")
    return args, cfg


def _growth_plan(model: MorphogeneticModel, cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """The (slot, blueprint) seeds the capacity and schedule arms use: `schedule_plan`, else the heuristic's own
    rules (its preferred blueprint in the widest slot)."""
    if cfg.schedule_plan is not None:
        return PlanTamiyo.parse_pairs(cfg.schedule_plan)
    slot = max(model.action_spec.slots, key=lambda s: model.slot(s).point.channels)
    blueprint = next(b for b in cfg.heuristic.blueprint_preference if b in model.config.blueprints)
    return [(slot, blueprint)]


def _pregrown(cfg: ExperimentConfig):
    """The capacity control's model preparation: the growth plan already fossilized at epoch 0."""
    def prepare(model: MorphogeneticModel) -> None:
        h = cfg.heuristic
        manifest = model.manifest()
        for slot, blueprint in _growth_plan(model, cfg):
            m = next(s for s in manifest.slots if s.name == slot)
            m.stage, m.blueprint, m.tempo, m.curve, m.alpha = Stage.FOSSILIZED.name, blueprint, h.tempo, h.curve, 1.0
        model.load_manifest(manifest)
    return prepare


def _controller(arm: str, cfg: ExperimentConfig, model: MorphogeneticModel):
    h = cfg.heuristic
    if arm in ("static", "capacity"):
        return WaitTamiyo()
    if arm == "schedule":
        return PlanTamiyo(_growth_plan(model, cfg), h.tempo, h.curve, start_epoch=cfg.schedule_epoch)
    if arm == "heuristic":
        return HeuristicTamiyo(h)
    agent = load_agent(cfg.agent, expected_features=feature_names(model.action_spec))  # the 'ppo' arm
    return NeuralTamiyo(agent)


def _summarise(rows: list[dict], arms: list[str], has_eval: bool) -> list[dict]:
    out = []
    for arm in arms:
        rs = [r for r in rows if r["arm"] == arm]
        stat = lambda k: (statistics.fmean(r[k] for r in rs), statistics.stdev([r[k] for r in rs]) if len(rs) > 1 else 0.0)
        s = {"arm": arm, "n": len(rs), "val_metric": stat("val_metric"), "params": stat("params_total"),
             "train_flops": stat("train_flops"), "seconds": stat("wall_seconds")}
        if has_eval:
            s["eval_metric"] = stat("eval_metric")
        out.append(s)
    return out


def _table(summary: list[dict], has_eval: bool, metric: str) -> str:
    pct = metric == "accuracy"  # accuracy is a fraction: shown in %
    f = (lambda v: f"{v:.2%}") if pct else (lambda v: f"{v:.4f}")
    head = (f"| arm | seeds | val {metric} (mean ± sample std) |" + (f" eval {metric} |" if has_eval else "")
            + " final params | training TFLOPs | wall-clock s |")
    lines = [head, "|---|---:|---:|" + ("---:|" if has_eval else "") + "---:|---:|---:|"]
    for s in summary:
        ev = f" {f(s['eval_metric'][0])} ± {f(s['eval_metric'][1])} |" if has_eval else ""
        lines.append(f"| {s['arm']} | {s['n']} | {f(s['val_metric'][0])} ± {f(s['val_metric'][1])} |{ev} "
                     f"{s['params'][0]:,.0f} | {s['train_flops'][0] / 1e12:.3g} | {s['seconds'][0]:.0f} ± {s['seconds'][1]:.0f} |")
    return "\n".join(lines)


def _samples(curves: list[dict], arms: list[str]) -> str:
    """Generated text of each arm's best run (tasks that can generate), for reading rather than a loss number."""
    out = []
    for arm in arms:
        rs = [c for c in curves if c["arm"] == arm and c.get("sample")]
        if rs:
            best = max(rs, key=lambda c: c["val_metric"])
            out.append(f"### {arm} (seed {best['seed']}, val {best['val_metric']:.4f})\n\n```\n{best['sample']}\n```\n")
    return "\n## Samples (300 characters, temperature 0.8)\n\n" + "\n".join(out) if out else ""


def _plot(rows: list[dict], arms: list[str], metric: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in arms:
        rs = [r for r in rows if r["arm"] == arm]
        ax.scatter([r["params_total"] for r in rs], [r["val_metric"] for r in rs], label=arm, alpha=0.8)
    ax.set_xlabel("final parameters")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"{metric} vs parameters (one point per seed)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


RUNS_LOG = "runs.jsonl"
"""One line per finished run ({"row", "curve"}), appended as each ends: what --resume reads."""


def _finished_runs(out: Path, resume: bool) -> list[dict]:
    """The runs already finished in `out` (with --resume), refusing to overwrite them without it. A torn last line
    (a crash while it was written) is dropped: that run is played again."""
    path = out / RUNS_LOG
    if path.is_file() and path.stat().st_size and not resume:
        sys.exit(f"error: {out} already holds finished runs ({path}): pass --resume to continue them, "
                 "or choose another --out")
    try:
        return read_log(path)
    except ValueError as exc:
        sys.exit(f"error: {exc}")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _check_same_config(out: Path, cfg: ExperimentConfig) -> None:
    """--resume continues a comparison only under the config it started with: its finished runs must stay comparable."""
    path = out / "config.yaml"
    if not path.is_file():
        sys.exit(f"error: --resume: {path} not found (is {out} a compare_controllers.py output folder?)")
    saved, now = _flat(yaml.safe_load(path.read_text())), _flat(cfg.model_dump(mode="json"))
    changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if changed:
        sys.exit(f"error: --resume: the config differs from {path} in {', '.join(changed)}: "
                 "resume with the same preset and --set options")


def _log_run(out: Path, row: dict, curve: dict) -> None:
    with open(out / RUNS_LOG, "a") as f:
        append_log(f, [{"row": row, "curve": curve}])


def _play(arm: str, seed: int, cfg: ExperimentConfig, task, device: torch.device, out: Path) -> tuple[dict, dict]:
    """One arm on one seed: its results row (results.csv) and its curve (summary.json, the plots)."""
    try:
        run = build_run(cfg.world, task, seed=seed, device=device, prepare=_pregrown(cfg) if arm == "capacity" else None)
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    hub = TelemetryHub([ConsoleBackend(), ParquetBackend(out / "telemetry" / f"{arm}-seed{seed}.parquet")], arm=arm, seed=seed)
    run.listen(hub)
    result = run_training(run, _controller(arm, cfg, run.model))
    hub.close()
    sample = task.generate(run.model, 300, seed) if hasattr(task, "generate") else None  # text: read it
    metric = task.metric_name
    curve = {"arm": arm, "seed": seed, "val_metric": result.val_metric, "eval_metric": result.eval_metric,
             "train_flops": result.train_flops, "metric_history": result.metric_history,
             "eval_metric_history": result.eval_metric_history, "flops_history": result.flops_history,
             "sample": sample}
    row = {"arm": arm, "seed": seed, "metric": metric, "val_metric": result.val_metric,
           "eval_metric": result.eval_metric, "params_total": result.params_total,
           "excess_ratio": result.excess_ratio, "rollbacks": result.rollbacks,
           "wall_seconds": result.wall_seconds, "train_flops": result.train_flops,
           "eval_flops": result.eval_flops, "counterfactual_flops": result.counterfactual_flops,
           "decisions": " | ".join(x for x in result.decisions if "WAIT" not in x)}
    print(f"== {arm} seed {seed}: val {metric} {result.val_metric:.4f}, params {result.params_total:,}, "
          f"{result.train_flops / 1e12:.3g} TFLOPs, {result.wall_seconds:.0f}s", flush=True)
    return row, curve


def main() -> None:
    args, cfg = _parse()
    version = code_version()  # at start: the code that actually ran
    if args.print_config:
        print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        return
    w = cfg.world
    device = pick_device(w.device)
    try:
        task = build_world_task(w, device)
    except DataError as exc:
        sys.exit(f"error: {exc}")
    if cfg.agent is not None:
        try:
            load_agent(cfg.agent)  # fail now, not after the first arms have run
        except AgentFileError as exc:
            sys.exit(f"error: {exc}")
    template = build_model(w)  # the plane as every arm starts it (no data, no training)
    if {"schedule", "capacity"} & set(cfg.arms):
        try:  # fail now, naming the field, not after the first arms have run
            PlanTamiyo(_growth_plan(template, cfg), cfg.heuristic.tempo, cfg.heuristic.curve).check(template.action_spec)
        except ValueError as exc:
            sys.exit(f"error: schedule_plan: {exc}")
    if w.trainer.budget_host_epochs is not None:
        n = w.trainer.budget_host_epochs
        _, epoch = host_epoch_flops(template.to(device), task, w.trainer.batch_size, w.trainer.max_batches_per_epoch)
        print(f"equal compute: {n * epoch / 1e12:.4g} TFLOPs each (the static host's {n:g} epochs)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.resume:
        _check_same_config(args.out, cfg)
    done = _finished_runs(args.out, resume=args.resume)  # before anything in --out is overwritten
    (args.out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    cap = "" if w.trainer.budget_flops is None else f" (≤ {w.trainer.budget_flops / 1e12:.4g} TFLOPs each)"
    cap = cap if w.trainer.budget_host_epochs is None else f" (≤ the static host's {w.trainer.budget_host_epochs:g} epochs)"
    print(f"task {task.name} ({w.data.model_dump()}); host {w.host.model_dump()}; {w.trainer.epochs} epochs{cap}; "
          f"arms {cfg.arms}; seeds {cfg.seeds}; out {args.out}", flush=True)
    rows, curves = [d["row"] for d in done], [d["curve"] for d in done]
    if done:
        print(f"resuming: {len(done)} finished runs read from {args.out / RUNS_LOG}", flush=True)
    for seed in cfg.seeds:
        for arm in cfg.arms:  # interleave arms within a seed so machine noise hits all arms alike
            if any(r["arm"] == arm and r["seed"] == seed for r in rows):
                continue
            row, curve = _play(arm, seed, cfg, task, device, args.out)
            _log_run(args.out, row, curve)  # on disk before the next run starts: a crash loses at most this one
            rows.append(row)
            curves.append(curve)
    order = {(seed, arm): i for i, (seed, arm) in enumerate((s, a) for s in cfg.seeds for a in cfg.arms)}
    rows.sort(key=lambda r: order[(r["seed"], r["arm"])])  # resumed or not: the same files
    curves.sort(key=lambda r: order[(r["seed"], r["arm"])])
    _write_outputs(args, cfg, rows, curves, task, version, device)


def _write_outputs(args: argparse.Namespace, cfg: ExperimentConfig, rows: list[dict], curves: list[dict], task,
                   version: str, device: torch.device) -> None:
    metric = task.metric_name
    has_eval = task.eval_batches is not None
    summary = _summarise(rows, cfg.arms, has_eval)
    with open(args.out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    meta = {"command": " ".join(["python", *sys.argv]), "config": cfg.model_dump(mode="json"), "code_version": version,
            "torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(), "machine": platform.platform()}
    (args.out / "summary.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": rows, "curves": curves},
                                                      indent=2))
    split = "eval" if has_eval else "val"  # with --eval-data, compute-to-target is judged on the external set
    references = [a for a in ("capacity", "static") if a in cfg.arms]
    table = _table(summary, has_eval, metric) + (
        "\n\n## Paired by seed\n\n" + paired_table(curves, cfg.arms, metric, references, split) if references else "")
    to_target, target = compute_to_target(curves, cfg.arms, metric, split)
    (args.out / "table.md").write_text(table + "\n\n## Compute to target\n\n" + to_target + "\n" + _samples(curves, cfg.arms))
    _plot(rows, cfg.arms, metric, args.out / "acc_vs_params.png")
    plot_curves(curves, cfg.arms, metric, target, args.out / "metric_vs_flops.png", split)
    print("\n" + table + "\n\n" + to_target + f"\n\nwrote {args.out}/(config.yaml, results.csv, summary.json, table.md, "
          "acc_vs_params.png, metric_vs_flops.png, telemetry/)")


if __name__ == "__main__":
    main()
