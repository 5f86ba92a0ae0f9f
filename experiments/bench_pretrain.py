"""Benchmark: env steps and wall-clock for PPO to reach the learning bar — from scratch vs from a BC warm start.

    python experiments/bench_pretrain.py --seeds 0 1 --out runs/bench_pretrain      # hours on 2 CPU cores
    python experiments/bench_pretrain.py --seeds 0 1 --out runs/bench_pretrain --resume

The bar (docs/results.md §5): the greedy policy beats WAIT-only by more than 2 paired standard errors on final
accuracy and on return over 20 evaluation episodes (seeds 100000–100019) of the smoke world. Both arms train PPO
with the same settings (the §5 learning test's: 512 steps per iteration, 128-step minibatches, 8 epochs, lr 1e-3;
`--set` to change them) and are evaluated every --eval-every iterations (in Ray tasks while the env runners
wait; evaluation time is not counted). The `bc` arm first records and clones as the main job does (the preset's
`pretrain:` section): its clock and env steps include the recording, and its clone is evaluated before PPO's
first iteration. An arm stops at its first evaluation that passes, or at --max-iterations (with `--until max`,
only there: to see where each arm gets, e.g. whether PPO from the clone goes beyond it).

Each arm × seed keeps OUT/<arm>-s<seed>/bench.jsonl (one line per evaluation) and a PPO checkpoint at every
evaluation; --resume continues each from there. OUT/summary.md and summary.json compare the arms (medians).
The logic is esper/study/bench_pretrain.py.
"""

from __future__ import annotations

import sys

from esper.study.cli import fail, load, script_parser, show_config, show_progress


def main() -> None:
    from esper.study.bench_pretrain import ARMS, LEARNING_TEST, PretrainBench, run_benchmark, write_summary

    p = script_parser(__doc__, preset="smoke", out="none, required", resume=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="PPO seeds per arm (default 0 1)")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--max-iterations", type=int, default=30, help="give up after this many (default %(default)s)")
    p.add_argument("--eval-every", type=int, default=2, help="iterations between evaluations (default %(default)s)")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes (default %(default)s)")
    p.add_argument("--until", choices=["bar", "max"], default="bar",
                   help="stop an arm at its first evaluation that passes (bar, default) or train it to "
                        "--max-iterations regardless (max: where each arm gets, not only when it first passes)")
    args = p.parse_args()
    from esper.simic.config import TrainTamiyoConfig

    args.overrides = LEARNING_TEST + args.overrides  # --set wins over the learning test's PPO settings
    base = load(p, args, TrainTamiyoConfig)  # the world checked whole
    show_config(args, base)
    if args.out is None:
        p.error("--out is required (the benchmark's folder)")
    if min(args.max_iterations, args.eval_every, args.episodes) < 1:
        p.error("--max-iterations, --eval-every and --episodes must be ≥ 1")
    if args.out.exists() and any(args.out.iterdir()) and not args.resume:
        p.error(f"{args.out} is not empty: --resume to continue it, or choose another --out")
    if "bc" in args.arms and base.pretrain is None:
        fail(f"preset {args.preset!r} has no pretrain: section for the bc arm")
    show_progress()
    bench = PretrainBench(base, args.out, args.seeds, args.arms, args.max_iterations, args.eval_every, args.episodes,
                          args.until)
    results = run_benchmark(bench)
    print(write_summary(bench, results, " ".join(["python", *sys.argv])))


if __name__ == "__main__":
    main()
