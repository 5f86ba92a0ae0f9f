"""Pretrain Tamiyo by behaviour cloning (RLlib BC) on recorded episodes; writes agent.pt for PPO to fine-tune.

    python experiments/record_episodes.py --preset smoke --episodes 16 --out runs/offline/smoke
    python experiments/pretrain_tamiyo.py --data runs/offline/smoke --out runs/bc/smoke --top-pct 50
    python experiments/ppo_multislot.py --preset smoke --set pretrain=null \
        --set ppo.init_agent=runs/bc/smoke/agent.pt                        # fine-tune it with PPO

Episodes are chosen from the recording's index (controllers, then the best --top-pct by return: filtered
behaviour cloning); a tenth of them is held out to report how well the clone predicts actions it was not trained
on. The clone is the same masked, factored TamiyoRLModule PPO trains, so its agent.pt loads anywhere a PPO agent
does. Then the clone plays --eval-episodes evaluation episodes beside WAIT-only and random (same seeds; paired
differences). The main job (`python experiments/ppo_multislot.py`, preset smoke) records and clones by itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from esper.study.cli import fail, show_progress


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a record_episodes.py output folder")
    p.add_argument("--out", type=Path, required=True, help="output folder (agent.pt, bc_data/, summary.json)")
    p.add_argument("--controllers", nargs="+", default=None, help="clone only these recorded controllers (default: all)")
    p.add_argument("--top-pct", type=float, default=100.0, help="keep the best this-%% of episodes by return")
    p.add_argument("--iterations", type=int, default=300, help="BC gradient steps (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-episodes", type=int, default=10, help="evaluation episodes of the clone (0: none)")
    args = p.parse_args()
    if not 0 < args.top_pct <= 100 or args.iterations < 1 or args.batch_size < 1 or args.lr <= 0 or args.eval_episodes < 0:
        p.error("--top-pct must be in (0, 100]; --iterations, --batch-size and --lr positive, --eval-episodes ≥ 0")
    return args


def _config(data: Path):
    """The recording's training config — or a one-line error."""
    from esper.leyline.experiment import ConfigError
    from esper.simic.config import TrainTamiyoConfig
    from esper.tolaria.builder import action_spec

    try:
        cfg = TrainTamiyoConfig.model_validate(json.loads((data / "manifest.json").read_text())["config"])
        action_spec(cfg.world)
        return cfg
    except OSError as exc:
        fail(f"{data} is not a finished record_episodes.py output ({exc.strerror}: manifest.json)")
    except (ValueError, KeyError, ConfigError) as exc:
        fail(f"{data / 'manifest.json'}: not a recording's manifest ({exc})")


def main() -> None:
    args = _parse()
    cfg = _config(args.data)
    show_progress()
    from esper.simic.offline.pretrain import PretrainDataError, behaviour_clone, prepare

    try:
        prepared = prepare(args.data, args.out, cfg, args.top_pct, args.seed, args.controllers)
    except PretrainDataError as exc:
        fail(str(exc))
    import ray

    from esper.runtime import local_ray
    from esper.study.episodes import compare_paired, evaluate_in_parallel, summarise
    from esper.simic.offline.record import FIRST_EVAL_SEED

    local_ray.init(None, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        behaviour_clone(prepared, cfg, args.iterations, args.batch_size, args.lr, args.seed)
        seeds = [FIRST_EVAL_SEED + i for i in range(args.eval_episodes)]
        agent = str(args.out / "agent.pt")
        stats = evaluate_in_parallel(cfg.world, {"clone": ("ppo", agent), "wait": ("wait", None),
                                                 "random": ("random", None)}, seeds) if seeds else {}
    finally:
        ray.shutdown()
    if stats:
        from esper.study.report import evaluation_lines

        evaluation = {k: summarise(v) for k, v in stats.items()}
        paired = compare_paired(stats, "clone", ["wait", "random"])
        print("\n".join(evaluation_lines(evaluation, paired, cfg.world.data.metric_name)))
        saved = json.loads((args.out / "summary.json").read_text())  # behaviour_clone's, with the loss curve
        (args.out / "summary.json").write_text(json.dumps(saved | {"evaluation": evaluation, "paired": paired}, indent=2))
    print(f"wrote {args.out / 'agent.pt'} and summary.json; fine-tune with ppo_multislot.py on the recording's preset "
          f"and\n  --set pretrain=null --set ppo.init_agent={args.out / 'agent.pt'}")


if __name__ == "__main__":
    main()
