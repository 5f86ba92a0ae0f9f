"""Env-steps/s of N Simic worlds: (a) N separate envs stepped one after another (what RLlib's default sync vector
env does), (b) the batch-first EsperVectorEnv, (c) N Ray actors with one env each (esper/study/bench_vector_env.py).

    python experiments/bench_vector_env.py                          # smoke world, N ∈ {1, 2, 4, 8}, 5 repeats (≈ 15 min)
    python experiments/bench_vector_env.py --n 1 2 --repeats 2 --steps 4 --no-actors   # a quick look
    python experiments/bench_vector_env.py --device cuda --preset cifar10 --no-actors --steps 4 \\
        --set world.trainer.max_batches_per_epoch=50                 # GPU variant (on a cluster GPU node)

Every arm plays the same scripted policy (germinate where allowed, advance where allowed, else wait), so each does
the same kind of work; arms are interleaved in every repeat (ratios from one run) and the table shows medians.
Also profiles where (b)'s time goes. Writes docs/data/bench_vector_env.json (--out) and docs/img/bench_vector_env.png
(--plot).
"""

from __future__ import annotations

import json
from pathlib import Path

from esper.study.cli import fail, load, script_parser, show_config, show_progress

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = script_parser(__doc__, preset="smoke", out="docs/data/bench_vector_env.json", out_file=True)
    p.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8], help="worlds per arm")
    p.add_argument("--steps", type=int, default=8, help="timed steps per world per measurement")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu", help="cpu | cuda (the GPU variant: one CUDA stream per model)")
    p.add_argument("--no-threads", action="store_true", help="skip arm (b′), the vector env with a thread pool")
    p.add_argument("--no-actors", action="store_true", help="skip arm (c), the Ray actors")
    p.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "bench_vector_env.png", metavar="PATH")
    args = p.parse_args()
    if min(args.n + [args.steps, args.repeats]) < 1:
        p.error("--n, --steps and --repeats must be ≥ 1")
    overrides = list(args.overrides)
    args.overrides.append(f"world.device={args.device}")
    from esper.simic.config import TrainTamiyoConfig

    cfg = load(p, args, TrainTamiyoConfig)  # the world checked whole
    show_config(args, cfg)
    world = cfg.world
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda but CUDA is not available here")
    show_progress()
    from esper.study import bench_vector_env as bench

    results, profile, cores = bench.run_benchmark(world, args.n, args.steps, args.repeats, args.device,
                                                  not args.no_threads, not args.no_actors)
    report = bench.report(results, profile, args.n, {
        "preset": args.preset, "overrides": overrides, "device": args.device, "threads": cores, "steps": args.steps,
        "repeats": args.repeats})
    print(report["table"])
    out = args.out or ROOT / "docs" / "data" / "bench_vector_env.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    bench.plot(results, args.plot, f"Simic env throughput: {args.preset} world, {args.device}, {cores} threads")
    print(f"wrote {out} and {args.plot}")


if __name__ == "__main__":
    main()
