"""The fair comparison: does growth help at an equal budget? Every arm is a Run of the same world.

Arms (every arm: identical epochs, optimiser, LR schedule, host init and data order per seed):
  wait        the host alone (the WAIT-only controller: the static host)
  capacity    the host with the growth plan already fossilized at epoch 0, trained jointly from the start
              (capacity control: the same extra parameters, no growth)
  schedule    the growth plan germinated from epoch `schedule_epoch`, fixed tempo, advancing through every gate
  any controller by its registered name (heuristic, ppo, random, plan:…; esper/tamiyo/registry.py)
  ARM+emrakul the arm with Emrakul auditing its fossils after every decision (`world.emrakul`, enabled for
              this arm only): grow, then prune, paired with the arm that only grows
The growth plan is `schedule_plan` (`block_copy@block1+block_copy@block2`), else the heuristic's preferred
blueprint in the widest slot. Each finished run is appended to OUT/runs.jsonl at once (esper/runlog.py): a
resumed comparison plays only the runs that are missing.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import platform
from pathlib import Path

import torch
import yaml
from pydantic import Field, field_validator, model_validator

from esper.kasmina import MorphogeneticModel
from esper.leyline import Stage
from esper.leyline.base import EsperModel
from esper.world import WorldConfig
from esper.runlog import ResumableLog
from esper.tamiyo import HeuristicConfig, PlanTamiyo
from esper.tamiyo.registry import controller_factory, entry_for, needs_agent

log = logging.getLogger(__name__)
OWN_ARMS = ("capacity", "schedule")
"""Arms that are not a controller's name: they are built from the growth plan."""
EMRAKUL_SUFFIX = "+emrakul"


def base_arm(arm: str) -> str:
    """The arm without its `+emrakul` suffix (what grows: a controller's name or an own arm)."""
    return arm.removesuffix(EMRAKUL_SUFFIX)


class CompareConfig(EsperModel):
    """Root config of the fair comparison: one world, the arms that play it, the seeds."""

    world: WorldConfig = WorldConfig()
    """What every arm trains: task data, host, plane, trainer (the equal budget), Governor (its `reward` is
    not used here). Set `val_images: null` to validate on the whole validation split."""
    heuristic: HeuristicConfig = HeuristicConfig()
    """Heuristic Tamiyo thresholds (also pick the capacity and schedule arms' slot and blueprint)."""
    seeds: list[int] = [0, 1, 2]
    """Training seeds (host init, data order); ≥ 3 for any claim."""
    arms: list[str] = ["wait", "capacity", "schedule", "heuristic"]
    """The arms: `capacity`, `schedule`, or any registered controller name (`ppo` plays `agent` greedily)."""
    agent: str | None = None
    """agent.pt for the arms that play a trained policy (its features must match this plane's)."""
    schedule_epoch: int = Field(2, ge=0)
    """Germination epoch of the fixed-schedule arm (its first seed's, with `schedule_plan`)."""
    schedule_plan: str | None = None
    """The seeds the schedule and capacity arms grow, 'blueprint@slot+…' in order (default: the heuristic's one
    preferred blueprint in its preferred slot)."""

    @field_validator("schedule_plan")
    @classmethod
    def _plan_parses(cls, text: str | None) -> str | None:
        if text is not None:
            PlanTamiyo.parse_pairs(text)  # a malformed plan fails at start-up (checked against the plane later)
        return text

    @field_validator("arms")
    @classmethod
    def _known_arms(cls, arms: list[str]) -> list[str]:
        for arm in map(base_arm, arms):
            if arm not in OWN_ARMS:
                entry_for(arm)  # ValueError naming it and the known names
        if len(set(arms)) != len(arms) or not arms:
            raise ValueError(f"arms must be distinct and at least one, got {arms}")
        return arms

    @model_validator(mode="after")
    def _agent_for_trained_arms(self) -> "CompareConfig":
        trained = [a for a in map(base_arm, self.arms) if a not in OWN_ARMS and needs_agent(a)]
        if bool(trained) != (self.agent is not None):
            raise ValueError("arms that play a trained policy (ppo, ppo-sampled) and `agent` (an agent.pt path) "
                             "go together")
        return self

    @model_validator(mode="after")
    def _decisions_for_the_budget(self) -> "CompareConfig":
        """With a budget in host epochs, `world.trainer.epochs` only caps the decisions: the static host needs
        one per budgeted epoch (and one more that ends it), every other arm fewer."""
        t = self.world.trainer
        if t.budget_host_epochs is not None and t.epochs <= t.budget_host_epochs:
            self.world.trainer = t.model_copy(update={"epochs": math.ceil(t.budget_host_epochs) + 1})
        return self


def growth_plan(cfg: CompareConfig, spec) -> list[tuple[str, str]]:
    """The (slot, blueprint) seeds the capacity and schedule arms use: `schedule_plan`, else the heuristic's own
    rules (its preferred blueprint in the widest slot)."""
    if cfg.schedule_plan is not None:
        return PlanTamiyo.parse_pairs(cfg.schedule_plan)
    slot = spec.slots[max(range(len(spec.slots)), key=lambda i: spec.slot_widths[i])]
    return [(slot, next(b for b in cfg.heuristic.blueprint_preference if b in spec.blueprints))]


def check_arms(cfg: CompareConfig, spec) -> None:
    """Every arm can play this plane (ValueError naming what is wrong), before the first run starts."""
    h = cfg.heuristic
    if set(OWN_ARMS) & set(map(base_arm, cfg.arms)):
        try:
            PlanTamiyo(growth_plan(cfg, spec), h.tempo, h.curve).check(spec)
        except ValueError as exc:
            raise ValueError(f"schedule_plan: {exc}") from None
    for arm in map(base_arm, cfg.arms):
        if arm not in OWN_ARMS and not needs_agent(arm):
            controller_factory(arm, spec)


def pregrown(cfg: CompareConfig):
    """The capacity control's model preparation: the growth plan already fossilized at epoch 0."""
    def prepare(model: MorphogeneticModel) -> None:
        h = cfg.heuristic
        manifest = model.manifest()
        for slot, blueprint in growth_plan(cfg, model.action_spec):
            m = next(s for s in manifest.slots if s.name == slot)
            m.stage, m.blueprint, m.tempo, m.curve, m.alpha = Stage.FOSSILIZED.name, blueprint, h.tempo, h.curve, 1.0
        model.load_manifest(manifest)
    return prepare


def arm_controller(arm: str, cfg: CompareConfig, spec, agent=None, seed: int = 0):
    """The controller an arm plays with (a fresh one per run)."""
    h = cfg.heuristic
    if arm == "capacity":
        return controller_factory("wait")()
    if arm == "schedule":
        return PlanTamiyo(growth_plan(cfg, spec), h.tempo, h.curve, start_epoch=cfg.schedule_epoch)
    if arm == "heuristic":
        from esper.tamiyo import HeuristicTamiyo

        return HeuristicTamiyo(h)  # the comparison's own thresholds
    return controller_factory(arm, spec, agent, seed)()


def play_arm(arm: str, seed: int, cfg: CompareConfig, task, device: torch.device, out: Path, agent=None) -> dict:
    """One arm on one seed: {"row": its results row (results.csv), "curve": its histories (summary.json, plots)}."""
    from esper.nissa import ConsoleBackend, ParquetBackend, TelemetryHub
    from esper.tolaria.builder import build_run
    from esper.tolaria.run import run_training

    grows, world = base_arm(arm), cfg.world
    if arm.endswith(EMRAKUL_SUFFIX):
        world = world.model_copy(update={"emrakul": world.emrakul.model_copy(update={"enabled": True})})
    run = build_run(world, task, seed=seed, device=device, prepare=pregrown(cfg) if grows == "capacity" else None,
                    capacity_price=cfg.world.reward.rent_lambda)  # what a controller is told, as in the RL world
    hub = TelemetryHub([ConsoleBackend(), ParquetBackend(out / "telemetry" / f"{arm}-seed{seed}.parquet")],
                       arm=arm, seed=seed)
    run.listen(hub)
    result = run_training(run, arm_controller(grows, cfg, run.model.action_spec, agent, seed))
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
           "audit_flops": result.audit_flops, "culled_fossils": result.culled_fossils,
           "revived_fossils": result.revived_fossils,
           "decisions": " | ".join(x for x in result.decisions if "WAIT" not in x)}
    log.info(f"== {arm} seed {seed}: val {metric} {result.val_metric:.4f}, params {result.params_total:,}, "
             f"{result.train_flops / 1e12:.3g} TFLOPs, {result.wall_seconds:.0f}s")
    return {"row": row, "curve": curve}


def start_comparison(cfg: CompareConfig, out: Path, resume: bool) -> tuple[object, ResumableLog]:
    """Everything that can be wrong before the first run, checked: every arm can play the plane, the agent file
    is an agent for it, and `out` holds no other comparison (ValueError naming the problem). Returns the agent
    (or None) and the comparison's log; the config is saved beside it."""
    from esper.study.evaluate import load_agent_checked
    from esper.tolaria.builder import action_spec

    check_arms(cfg, action_spec(cfg.world))
    agent = load_agent_checked(Path(cfg.agent), cfg.world) if cfg.agent else None
    runs = ResumableLog(out / "runs.jsonl", cfg.model_dump(mode="json"), resume)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return agent, runs


def run_comparison(cfg: CompareConfig, out: Path, agent, runs: ResumableLog, meta: dict) -> str:
    """Every arm on every seed (arms interleaved within a seed, so machine noise hits all alike), each run logged
    as it ends; then results.csv, summary.json, table.md and the plots. Returns the tables."""
    from esper.tolaria.builder import build_world_task
    from esper.tolaria.trainer import pick_device

    w = cfg.world
    device = pick_device(w.device)
    task = build_world_task(w, device)
    log.info(f"task {task.name} ({w.data.model_dump()}); host {w.host.model_dump()}; {w.trainer.epochs} epochs"
             f"{_budget_note(w, task, device)}; arms {cfg.arms}; seeds {cfg.seeds}; out {out}")
    if runs.records:
        log.info(f"resuming: {len(runs.records)} finished runs read from {runs.path}")
    for seed in cfg.seeds:
        for arm in cfg.arms:
            if not any(r["row"]["arm"] == arm and r["row"]["seed"] == seed for r in runs.records):
                runs.append(play_arm(arm, seed, cfg, task, device, out, agent))  # on disk before the next run
    order = {(seed, arm): i for i, (seed, arm) in enumerate((s, a) for s in cfg.seeds for a in cfg.arms)}
    done = sorted(runs.records, key=lambda r: order[(r["row"]["seed"], r["row"]["arm"])])  # resumed or not: same files
    meta |= {"config": cfg.model_dump(mode="json"), "torch": torch.__version__, "device": str(device),
             "threads": torch.get_num_threads(), "machine": platform.platform()}
    return write_outputs(cfg, out, [r["row"] for r in done], [r["curve"] for r in done], task, meta)


def _budget_note(w: WorldConfig, task, device) -> str:
    """What the equal-compute budget is, for the first progress line."""
    from esper.tolaria.builder import build_model
    from esper.tolaria.flops import host_epoch_flops

    t = w.trainer
    if t.budget_host_epochs is not None:
        _, epoch = host_epoch_flops(build_model(w).to(device), task, t.batch_size, t.max_batches_per_epoch)
        return f" (≤ the static host's {t.budget_host_epochs:g} epochs: {t.budget_host_epochs * epoch / 1e12:.4g} TFLOPs)"
    return "" if t.budget_flops is None else f" (≤ {t.budget_flops / 1e12:.4g} TFLOPs each)"


def write_outputs(cfg: CompareConfig, out: Path, rows: list[dict], curves: list[dict], task, meta: dict) -> str:
    """results.csv, summary.json, table.md (with differences paired by seed against the capacity and WAIT arms),
    acc_vs_params.png and metric_vs_flops.png; returns the tables."""
    from esper.study.prune import prune_table
    from esper.study.tables import (arms_table, compute_to_target, paired_table, plot_curves, plot_params,
                                    samples_markdown, summarise_arms)

    metric, has_eval = task.metric_name, task.eval_batches is not None
    summary = summarise_arms(rows, cfg.arms, has_eval)
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "summary.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": rows, "curves": curves},
                                                 indent=2))
    split = "eval" if has_eval else "val"  # with an external evaluation set, compute-to-target is judged on it
    references = [a for a in ("capacity", "wait") if a in cfg.arms]
    table = arms_table(summary, has_eval, metric) + (
        "\n\n## Paired by seed\n\n" + paired_table(curves, cfg.arms, metric, references, split) if references else "")
    to_target, target = compute_to_target(curves, cfg.arms, metric, split)
    pruning = prune_table(rows, cfg.arms, cfg.world.reward.rent_lambda)
    if pruning:
        table += "\n\n## Grow, then prune (each +emrakul arm paired with the arm that only grows)\n\n" + pruning
    (out / "table.md").write_text(table + "\n\n## Compute to target\n\n" + to_target + "\n"
                                  + samples_markdown(curves, cfg.arms))
    plot_params(rows, cfg.arms, metric, out / "acc_vs_params.png")
    plot_curves(curves, cfg.arms, metric, target, out / "metric_vs_flops.png", split)
    return table + "\n\n" + to_target
