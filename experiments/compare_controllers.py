"""The fair comparison: does growth help at an equal budget?

    python experiments/compare_controllers.py --quick                     # CIFAR-10 subset, CPU, ≤ 30 min
    python experiments/compare_controllers.py --data synthetic --epochs 6 --seeds 0 1 2
    python experiments/compare_controllers.py --data cifar10 --limit 0 --epochs 25 --preset paper   # GPU protocol

Arms (every arm: identical epochs, optimiser, LR schedule, host init and data order per seed):
  static      the host alone (WAIT-only controller)
  capacity    the host with the heuristic's preferred blueprint already fossilized in its preferred slot at
              epoch 0, trained jointly from the start (capacity control: same extra parameters, no growth)
  schedule    germinate that blueprint in that slot at epoch --schedule-epoch, fixed tempo, advance on gates
  heuristic   heuristic Tamiyo (esper/tamiyo/heuristic.py)
Writes results.csv, summary.json, table.md, acc_vs_params.png and per-run telemetry under --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from esper.kasmina import MorphogeneticModel
from esper.kasmina.hosts import CNNHost
from esper.leyline import HostConfig, KasminaConfig, Stage
from esper.nissa import ConsoleBackend, ParquetBackend, TelemetryHub
from esper.tamiyo import HeuristicConfig, HeuristicTamiyo, ScheduleTamiyo, StaticTamiyo
from esper.tolaria.data import DataError, DeviceLoader
from esper.tolaria.datasets import load_bundle
from esper.tolaria.governor import Governor
from esper.tolaria.run import run_training
from esper.tolaria.trainer import Trainer, TrainerConfig, pick_device

ARMS = ("static", "capacity", "schedule", "heuristic")
CIFAR_PARQUET = "../shared/data/cifar10/train.parquet"


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"CPU protocol: {CIFAR_PARQUET}, 10k images, small host, 8 epochs, seeds 0 1 2")
    p.add_argument("--data", default="synthetic", help="'synthetic', 'cifar10' (torchvision download) or a .parquet path")
    p.add_argument("--limit", type=int, default=6000, help="images drawn from the source (0 = all)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--eval-data", default=None, help="optional external evaluation set (.parquet)")
    p.add_argument("--preset", default="tiny", choices=["tiny", "small", "paper"])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--schedule-epoch", type=int, default=2, help="germination epoch of the schedule arm")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/compare/<time>)")
    args = p.parse_args()
    if args.quick:
        args.data, args.limit, args.val_fraction, args.preset, args.epochs = CIFAR_PARQUET, 10000, 0.2, "small", 8
    if args.epochs < 1 or not args.seeds or not 0 < args.val_fraction < 1:
        p.error("--epochs must be ≥ 1, --seeds non-empty, --val-fraction in (0, 1)")
    if len(args.seeds) < 3:
        print("warning: fewer than 3 seeds — mean ± std will not support a claim", file=sys.stderr)
    args.out = args.out or Path("runs/compare") / time.strftime("%Y%m%d-%H%M%S")
    return args


def _build(arm: str, args, bundle, seed: int, heuristic: HeuristicConfig):
    torch.manual_seed(seed)  # identical host initialisation in every arm
    model = MorphogeneticModel(CNNHost(HostConfig(preset=args.preset))).to(args.device_obj)
    slot = max(model.action_spec.slots, key=lambda s: model.slot(s).point.channels)  # the heuristic's slot rule
    blueprint = next(b for b in heuristic.blueprint_preference if b in model.config.blueprints)
    controller = {"static": StaticTamiyo, "capacity": StaticTamiyo}.get(arm, lambda: None)()
    if arm == "capacity":
        manifest = model.manifest()
        m = next(s for s in manifest.slots if s.name == slot)
        m.stage, m.blueprint, m.tempo, m.curve, m.alpha = Stage.FOSSILIZED.name, blueprint, heuristic.tempo, heuristic.curve, 1.0
        model.load_manifest(manifest)
    elif arm == "schedule":
        controller = ScheduleTamiyo(args.schedule_epoch, slot, blueprint, heuristic.tempo, heuristic.curve)
    elif arm == "heuristic":
        controller = HeuristicTamiyo(heuristic)
    cfg = TrainerConfig(epochs=args.epochs, batch_size=args.batch_size)
    trainer = Trainer(model, bundle.train, bundle.val, cfg, bundle.mean, bundle.std, seed=seed)
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
    args = _parse()
    args.device_obj = pick_device(args.device)
    try:
        bundle = load_bundle(args.data, limit=args.limit or None, val_fraction=args.val_fraction, seed=0,
                             device=args.device_obj, eval_path=args.eval_data)
    except DataError as exc:
        sys.exit(f"error: {exc}")
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"data {args.data}: {len(bundle.train)} train / {len(bundle.val)} val; host {args.preset}; "
          f"{args.epochs} epochs; arms {args.arms}; seeds {args.seeds}; out {args.out}", flush=True)
    heuristic = HeuristicConfig()
    rows = []
    for seed in args.seeds:
        for arm in args.arms:  # interleave arms within a seed so machine noise hits all arms alike
            model, trainer, controller = _build(arm, args, bundle, seed, heuristic)
            hub = TelemetryHub([ConsoleBackend(), ParquetBackend(args.out / "telemetry" / f"{arm}-seed{seed}.parquet")], arm=arm, seed=seed)
            model.listeners.append(hub)
            eval_loader = DeviceLoader(bundle.eval, 512, bundle.mean, bundle.std, False, False, seed) if bundle.eval else None
            result = run_training(trainer, controller, Governor(trainer, emit=hub), emit=hub, eval_loader=eval_loader)
            hub.close()
            rows.append({"arm": arm, "seed": seed, "val_accuracy": result.val_accuracy, "eval_accuracy": result.eval_accuracy,
                         "params_total": result.params_total, "excess_ratio": result.excess_ratio,
                         "rollbacks": result.rollbacks, "wall_seconds": result.wall_seconds,
                         "decisions": " | ".join(d for d in result.decisions if "WAIT" not in d)})
            print(f"== {arm} seed {seed}: val_acc {result.val_accuracy:.2%}, params {result.params_total:,}, {result.wall_seconds:.0f}s", flush=True)
    has_eval = bundle.eval is not None
    summary = _summarise(rows, args.arms, has_eval)
    with open(args.out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    meta = {"command": " ".join(["python", *sys.argv]), "args": {k: str(v) for k, v in vars(args).items() if k != "device_obj"},
            "torch": torch.__version__, "device": str(args.device_obj), "threads": torch.get_num_threads()}
    (args.out / "summary.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": rows}, indent=2))
    table = _table(summary, has_eval)
    (args.out / "table.md").write_text(table + "\n")
    _plot(rows, args.arms, args.out / "acc_vs_params.png")
    print("\n" + table + f"\n\nwrote {args.out}/(results.csv, summary.json, table.md, acc_vs_params.png, telemetry/)")


if __name__ == "__main__":
    main()
