"""A training job that asks a served Tamiyo what to do every epoch — outside the Serve process.

    python experiments/serve_tamiyo.py --agent runs/ppo/<run>/agent.pt          # in one shell
    python experiments/remote_training.py --url http://127.0.0.1:8000           # in another
    python experiments/remote_training.py --check-against runs/ppo/<run>/agent.pt  # also run in-process, compare
    python experiments/remote_training.py --rent 0.3   # this job prices capacity at λ = 0.3 (a rent-conditioned Tamiyo sees it)

The job trains the world's host (--preset, default smoke) with Tolaria; before each epoch it sends the
observation (features + mask) to POST /v1/decide and applies the answer. When the server is down, slow or
refuses, that epoch falls back to `--fallback` (WAIT or the heuristic), the failure is logged, and the next
epoch asks the server again. It never crashes on a server problem (esper/serve/remote_job.py). With
--check-against, exit code 1 if the in-process run differs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from esper.study.cli import checked, load, script_parser, show_config, show_progress


def main() -> None:
    p = script_parser(__doc__, preset="smoke", out="none: no JSON", out_file=True)
    p.add_argument("--url", default="http://127.0.0.1:8000", help="served Tamiyo (default %(default)s)")
    p.add_argument("--token", default=os.environ.get("ESPER_TAMIYO_TOKEN"),
                   help="bearer token (default: $ESPER_TAMIYO_TOKEN)")
    p.add_argument("--seed", type=int, default=0, help="seed of host initialisation and data order")
    p.add_argument("--rent", type=float, default=None, metavar="LAMBDA",
                   help="the price of capacity this job asks Tamiyo to respect (= --set world.reward.rent_lambda=LAMBDA; "
                        "a rent-conditioned Tamiyo sees it in its observation)")
    p.add_argument("--fallback", choices=["wait", "heuristic"], default="wait", help="decision when the server fails")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds per HTTP attempt (default %(default)s)")
    p.add_argument("--retries", type=int, default=2, help="retries per decision before falling back")
    p.add_argument("--check-against", type=Path, default=None, metavar="AGENT",
                   help="also run the same job in-process with this agent.pt and compare the results")
    args = p.parse_args()
    from esper.simic.config import TrainTamiyoConfig
    from esper.tamiyo.agent_file import load_agent
    from esper.tolaria.builder import build_model

    args.overrides += [f"world.reward.rent_lambda={args.rent}"] if args.rent is not None else []
    cfg = load(p, args, TrainTamiyoConfig)  # the world checked whole
    world = cfg.world
    checked(lambda: build_model(world))  # the host and plane build before any server is asked
    agent = checked(lambda: load_agent(args.check_against)) if args.check_against else None
    show_config(args, cfg)
    show_progress()  # also the fallbacks' warnings
    from esper.leyline.experiment import ConfigError
    from esper.serve import remote_job
    from esper.tolaria.data import DataError

    remote = remote_job.remote_controller(args.url, args.token, args.timeout, args.retries, args.fallback)
    # the task's data, or a host that does not fit it, shows only when the run builds
    result, summary = checked(lambda: remote_job.run_remote(world, remote, args.seed), ConfigError, DataError)
    if agent is not None:
        summary["in_process"] = remote_job.same_run(agent, world, args.seed, result)
    if args.out:
        remote_job.write_summary(args.out, summary)
    if summary.get("in_process", {}).get("equal") is False:
        sys.exit(1)


if __name__ == "__main__":
    main()
