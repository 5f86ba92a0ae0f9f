"""The fair comparison: does growth help at an equal budget?

    python experiments/compare_controllers.py --quick           # = --config experiments/presets/compare_quick.yaml
    python experiments/compare_controllers.py --config experiments/presets/compare_synthetic.yaml
    python experiments/compare_controllers.py --config experiments/presets/compare_full.yaml   # GPU protocol
    python experiments/compare_controllers.py --set trainer.epochs=4 --set seeds=[0,1,2] --set host.preset=small

Arms (every arm: identical epochs, optimiser, LR schedule, host init and data order per seed):
  static      the host alone (WAIT-only controller)
  capacity    the host with the heuristic's preferred blueprint already fossilized in its preferred slot at
              epoch 0, trained jointly from the start (capacity control: same extra parameters, no growth)
  schedule    germinate that blueprint in that slot at epoch `schedule_epoch`, fixed tempo, advance on gates
  heuristic   heuristic Tamiyo (esper/tamiyo/heuristic.py)
  ppo         a trained Tamiyo: --set agent=runs/ppo/<run>/agent.pt --set 'arms=[static,heuristic,ppo]' 
Writes results.csv, summary.json, table.md, acc_vs_params.png and per-run telemetry under --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

from esper.kasmina import MorphogeneticModel
from esper.kasmina.hosts import CNNHost
from esper.leyline import Stage
from esper.leyline.experiment import ConfigError, ExperimentConfig, load_config
from esper.leyline.features import feature_names
from esper.nissa import ConsoleBackend, ParquetBackend, TelemetryHub
from esper.provenance import code_version
from esper.tamiyo import HeuristicTamiyo, ScheduleTamiyo, StaticTamiyo
from esper.tamiyo.agent_file import AgentFileError, load_agent
from esper.tamiyo.neural import NeuralTamiyo
from esper.tolaria.data import DataError, DeviceLoader
from esper.tolaria.datasets import load_bundle
from esper.tolaria.governor import Governor
from esper.tolaria.run import run_training
from esper.tolaria.trainer import Trainer, pick_device

QUICK_PRESET = Path(__file__).parent / "presets" / "compare_quick.yaml"


def _parse() -> tuple[argparse.Namespace, ExperimentConfig]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=None, help="YAML preset (see experiments/presets/)")
    p.add_argument("--quick", action="store_true", help=f"shorthand for --config {QUICK_PRESET}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set trainer.epochs=12 (repeatable)")
    p.add_argument("--eval-data", default=None, metavar="PATH.parquet",
                   help="external evaluation set, reported beside validation (= --set data.eval_data=PATH)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/compare/<time>)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = p.parse_args()
    if args.quick and args.config:
        p.error("--quick and --config are exclusive")
    if args.eval_data:
        args.overrides.append(f"data.eval_data={args.eval_data}")
    try:
        cfg = load_config(QUICK_PRESET if args.quick else args.config, args.overrides)
    except ConfigError as exc:
        p.error(str(exc))
    if len(cfg.seeds) < 3:
        print("warning: fewer than 3 seeds — mean ± std will not support a claim", file=sys.stderr)
    args.out = args.out or Path("runs/compare") / time.strftime("%Y%m%d-%H%M%S")
    return args, cfg


def _build(arm: str, cfg: ExperimentConfig, device: torch.device, bundle, seed: int):
    heuristic = cfg.heuristic
    torch.manual_seed(seed)  # identical host initialisation in every arm
    model = MorphogeneticModel(CNNHost(cfg.host), cfg.kasmina).to(device)
    slot = max(model.action_spec.slots, key=lambda s: model.slot(s).point.channels)  # the heuristic's slot rule
    blueprint = next(b for b in heuristic.blueprint_preference if b in model.config.blueprints)
    controller = {"static": StaticTamiyo, "capacity": StaticTamiyo}.get(arm, lambda: None)()
    if arm == "capacity":
        manifest = model.manifest()
        m = next(s for s in manifest.slots if s.name == slot)
        m.stage, m.blueprint, m.tempo, m.curve, m.alpha = Stage.FOSSILIZED.name, blueprint, heuristic.tempo, heuristic.curve, 1.0
        model.load_manifest(manifest)
    elif arm == "schedule":
        controller = ScheduleTamiyo(cfg.schedule_epoch, slot, blueprint, heuristic.tempo, heuristic.curve)
    elif arm == "heuristic":
        controller = HeuristicTamiyo(heuristic)
    elif arm == "ppo":  # a trained Tamiyo plugs in as just another controller
        agent = load_agent(cfg.agent, expected_features=feature_names(model.action_spec))
        controller = NeuralTamiyo(agent, cfg.host.num_classes)
    trainer = Trainer(model, bundle.train, bundle.val, cfg.trainer, bundle.mean, bundle.std, seed=seed)
    return model, trainer, controller


def _summarise(rows: list[dict], arms: list[str], has_eval: bool) -> list[dict]:
    out = []
    for arm in arms:
        rs = [r for r in rows if r["arm"] == arm]
        stat = lambda k: (statistics.fmean(r[k] for r in rs), statistics.pstdev([r[k] for r in rs]) if len(rs) > 1 else 0.0)
        s = {"arm": arm, "n": len(rs), "val_acc": stat("val_accuracy"), "params": stat("params_total"), "seconds": stat("wall_seconds")}
        if has_eval:
            s["eval_acc"] = stat("eval_accuracy")
        out.append(s)
    return out


def _table(summary: list[dict], has_eval: bool) -> str:
    head = "| arm | seeds | val accuracy (mean ± std) |" + (" eval accuracy |" if has_eval else "") + " final params | wall-clock s |"
    lines = [head, "|---|---:|---:|" + ("---:|" if has_eval else "") + "---:|---:|"]
    for s in summary:
        ev = f" {s['eval_acc'][0]:.2%} ± {s['eval_acc'][1]:.2%} |" if has_eval else ""
        lines.append(f"| {s['arm']} | {s['n']} | {s['val_acc'][0]:.2%} ± {s['val_acc'][1]:.2%} |{ev} "
                     f"{s['params'][0]:,.0f} | {s['seconds'][0]:.0f} ± {s['seconds'][1]:.0f} |")
    return "\n".join(lines)


def _plot(rows: list[dict], arms: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in arms:
        rs = [r for r in rows if r["arm"] == arm]
        ax.scatter([r["params_total"] for r in rs], [r["val_accuracy"] for r in rs], label=arm, alpha=0.8)
    ax.set_xlabel("final parameters")
    ax.set_ylabel("validation accuracy")
    ax.set_title("accuracy vs parameters (one point per seed)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    args, cfg = _parse()
    version = code_version()  # at start: the code that actually ran
    if args.print_config:
        print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        return
    device = pick_device(cfg.device)
    d = cfg.data
    try:
        bundle = load_bundle(d.source, limit=d.limit, val_fraction=d.val_fraction, seed=0, device=device, eval_path=d.eval_data)
    except DataError as exc:
        sys.exit(f"error: {exc}")
    if cfg.agent is not None:
        try:
            load_agent(cfg.agent)  # fail now, not after the first arms have run
        except AgentFileError as exc:
            sys.exit(f"error: {exc}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    print(f"data {d.source}: {len(bundle.train)} train / {len(bundle.val)} val; host {cfg.host.preset}; "
          f"{cfg.trainer.epochs} epochs; arms {cfg.arms}; seeds {cfg.seeds}; out {args.out}", flush=True)
    rows = []
    for seed in cfg.seeds:
        for arm in cfg.arms:  # interleave arms within a seed so machine noise hits all arms alike
            model, trainer, controller = _build(arm, cfg, device, bundle, seed)
            hub = TelemetryHub([ConsoleBackend(), ParquetBackend(args.out / "telemetry" / f"{arm}-seed{seed}.parquet")], arm=arm, seed=seed)
            model.listeners.append(hub)
            eval_loader = DeviceLoader(bundle.eval, 512, bundle.mean, bundle.std, False, False, seed) if bundle.eval else None
            result = run_training(trainer, controller, Governor(trainer, cfg.governor, emit=hub), emit=hub, eval_loader=eval_loader)
            hub.close()
            rows.append({"arm": arm, "seed": seed, "val_accuracy": result.val_accuracy, "eval_accuracy": result.eval_accuracy,
                         "params_total": result.params_total, "excess_ratio": result.excess_ratio,
                         "rollbacks": result.rollbacks, "wall_seconds": result.wall_seconds,
                         "decisions": " | ".join(x for x in result.decisions if "WAIT" not in x)})
            print(f"== {arm} seed {seed}: val_acc {result.val_accuracy:.2%}, params {result.params_total:,}, {result.wall_seconds:.0f}s", flush=True)
    has_eval = bundle.eval is not None
    summary = _summarise(rows, cfg.arms, has_eval)
    with open(args.out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    meta = {"command": " ".join(["python", *sys.argv]), "config": cfg.model_dump(mode="json"), "code_version": version,
            "torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(), "machine": platform.platform()}
    (args.out / "summary.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": rows}, indent=2))
    table = _table(summary, has_eval)
    (args.out / "table.md").write_text(table + "\n")
    _plot(rows, cfg.arms, args.out / "acc_vs_params.png")
    print("\n" + table + f"\n\nwrote {args.out}/(config.yaml, results.csv, summary.json, table.md, acc_vs_params.png, telemetry/)")



if __name__ == "__main__":
    main()
