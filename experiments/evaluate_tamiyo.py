"""Evaluate a trained Tamiyo (agent.pt) against random, WAIT-only and the heuristic on the same seeds.

    python experiments/evaluate_tamiyo.py --agent runs/ppo/<run>/agent.pt --episodes 20
    python experiments/evaluate_tamiyo.py --episodes 20                  # baselines only (no agent)
    python experiments/evaluate_tamiyo.py --episodes 8 --controllers wait plan:conv_light@block3 \
        plan:conv_light@block3+conv_heavy@block1   # fixed growth plans: what growth is worth on a world
    python experiments/evaluate_tamiyo.py --agent runs/ppo/<run>/agent.pt --worlds experiments/worlds/heldout_family.yaml
        # held-out worlds of a family: per-world and pooled paired differences

Every controller plays the same evaluation episodes (same world, same episode seeds: identical host init and
data order). Reports mean ± sample std [standard error] of the final metric, return, seeds germinated /
fossilized / culled and final parameter ratio, paired differences, and (--plan-space) the plans ranked; writes
evaluation.json + evaluation.md and plots one agent episode's lifecycle. Each finished (world, controller) episode
set is logged at once (OUT/episodes.jsonl): after a crash, the same command with --resume plays only what is missing.
"""

from __future__ import annotations

from pathlib import Path

from esper.study.cli import check_world, checked, fail, load, script_parser, show_progress
from esper.tamiyo.registry import names_help


def main() -> None:
    p = script_parser(__doc__, preset=None, out="beside the agent (eval/), else runs/eval", resume=True)
    p.add_argument("--agent", type=Path, default=None, help="agent.pt to evaluate (its world is used unless --preset)")
    p.add_argument("--preset", default=None, metavar="NAME|PATH", help="world preset (default: the agent's world, else smoke)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a world field, e.g. --set world.trainer.epochs=12 (repeatable)")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed-base", type=int, default=100_000, help="evaluation episode seeds: base, base+1, …")
    p.add_argument("--controllers", nargs="+", default=["ppo", "ppo-sampled", "random", "wait", "heuristic"],
                   help=names_help())
    p.add_argument("--worlds", type=Path, default=None, metavar="FILE",
                   help="YAML list of named worlds (`worlds: [{name, set: {dotted.path: value}}]`) applied over the "
                        "agent's/preset's world (its family's `vary` dropped); reports per world and pooled")
    p.add_argument("--plan-space", type=int, default=0, metavar="K",
                   help="also play every fixed plan of 1..K seeds (distinct slots, deepest first, any blueprint) and "
                        "rank the plans by mean return: the search for the best single fixed plan")
    p.add_argument("--plan-starts", type=int, nargs="+", default=[0], metavar="EPOCH",
                   help="with --plan-space: start every plan at each of these epochs (plan:…,epoch=E)")
    args = p.parse_args()
    if args.episodes < 1 or args.plan_space < 0 or min(args.plan_starts) < 0:
        p.error("--episodes must be ≥ 1, --plan-space and --plan-starts ≥ 0")
    show_progress()
    world = _world(p, args)
    checked(lambda: check_world(world))  # the agent's own world too
    seeds = [args.seed_base + i for i in range(args.episodes)]
    out = args.out or (args.agent.parent / "eval" if args.agent else Path("runs/eval"))
    from esper.study.evaluate import run_evaluation
    from esper.study.report import evaluation_markdown

    report = checked(lambda: run_evaluation(world, args.agent, args.controllers, seeds, out, args.resume, args.worlds,
                                            args.plan_space, args.plan_starts))
    print("\n" + evaluation_markdown(report) + f"\nwrote {out}/evaluation.json, evaluation.md")


def _world(p, args):
    """The world to play: --preset's, else the agent's own, else smoke's."""
    from esper.simic.config import TrainTamiyoConfig
    from esper.tamiyo.agent_file import load_agent

    if args.preset or args.agent is None:
        return load(p, args, TrainTamiyoConfig, preset=args.preset or "smoke").world
    agent = checked(lambda: load_agent(args.agent))
    try:
        return TrainTamiyoConfig.model_validate(agent.provenance["config"]).world
    except (KeyError, ValueError) as exc:
        fail(f"--agent: {args.agent} does not record a valid world ({exc}); give --preset")


if __name__ == "__main__":
    main()
