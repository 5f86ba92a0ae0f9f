"""A training job that asks a served Tamiyo what to do every epoch — outside the Serve process.

    python experiments/serve_tamiyo.py --agent runs/ppo/<run>/agent.pt          # in one shell
    python experiments/remote_training.py --url http://127.0.0.1:8000           # in another
    python experiments/remote_training.py --check-against runs/ppo/<run>/agent.pt  # also run in-process, compare
    python experiments/remote_training.py --rent 0.3   # this job prices capacity at λ = 0.3 (a rent-conditioned Tamiyo sees it)

The job trains the world's host (default: the smoke preset) with Tolaria; before each epoch it sends the
observation (features + mask) to POST /v1/decide and applies the answer. When the server is down, slow or
refuses, that epoch falls back to `--fallback` (WAIT or the heuristic), the failure is logged, and the next
epoch asks the server again. It never crashes on a server problem.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path



def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000", help="served Tamiyo (default %(default)s)")
    p.add_argument("--token", default=os.environ.get("ESPER_TAMIYO_TOKEN"),
                   help="bearer token (default: $ESPER_TAMIYO_TOKEN)")
    p.add_argument("--preset", default="smoke", help="world preset name or YAML: data, host, trainer (default smoke)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=0, help="seed of host initialisation and data order")
    p.add_argument("--rent", type=float, default=None, metavar="LAMBDA",
                   help="the price of capacity this job asks Tamiyo to respect (= --set world.reward.rent_lambda=LAMBDA; "
                        "a rent-conditioned Tamiyo sees it in its observation)")
    p.add_argument("--fallback", choices=["wait", "heuristic"], default="wait", help="decision when the server fails")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds per HTTP attempt (default %(default)s)")
    p.add_argument("--retries", type=int, default=2, help="retries per decision before falling back")
    p.add_argument("--check-against", type=Path, default=None, metavar="AGENT",
                   help="also run the same job in-process with this agent.pt and compare the results")
    p.add_argument("--out", type=Path, default=None, help="write result JSON here")
    return p.parse_args()


def train(world, controller, seed: int):
    """One Run of `world` steered by `controller` (the same code for remote and in-process; the same Run, and so
    the same observations, as the RL env's episodes)."""
    from esper.tolaria.builder import build_run, build_world_task
    from esper.tolaria.run import run_training
    from esper.tolaria.trainer import pick_device

    device = pick_device(world.device)
    return run_training(build_run(world, build_world_task(world, device), seed=seed, device=device), controller)


def main() -> None:
    args = _parse()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    from _config import load_preset
    from esper.leyline.experiment import ConfigError
    from esper.serve.client import RemoteTamiyo, TamiyoClient
    from esper.simic.config import TrainTamiyoConfig
    from esper.tamiyo import HeuristicTamiyo, WaitTamiyo
    from esper.tolaria.builder import build_model
    from esper.tolaria.data import DataError

    try:
        overrides = args.overrides + ([f"world.reward.rent_lambda={args.rent}"] if args.rent is not None else [])
        world = load_preset(args.preset, overrides, TrainTamiyoConfig).world
        build_model(world)  # the host and plane must build before any server is asked
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    fallback = HeuristicTamiyo() if args.fallback == "heuristic" else WaitTamiyo()
    client = TamiyoClient(args.url, token=args.token, timeout_s=args.timeout, retries=args.retries)
    remote = RemoteTamiyo(client, fallback=fallback)
    print(f"training world {world.name!r} (seed {args.seed}), asking {args.url} every epoch", flush=True)
    try:
        result = train(world, remote, args.seed)
    except (ConfigError, DataError) as exc:  # the task's data, or a host that does not fit it
        sys.exit(f"error: {exc}")
    summary = {"metric": result.metric_name, "val_metric": result.val_metric, "params_total": result.params_total,
               "decisions": result.decisions, "asked": remote.asked, "answered": remote.answered, "fallbacks": remote.fallbacks}
    print(f"remote: val {result.metric_name} {result.val_metric:.4f}, params {result.params_total:,}; "
          f"{remote.answered}/{remote.asked} decisions from the server, {remote.fallbacks} fallbacks")
    if args.check_against is not None:
        summary["in_process"] = _compare(args.check_against, world, args.seed, result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))
    if summary.get("in_process", {}).get("equal") is False:
        sys.exit(1)


def _compare(agent_path: Path, world, seed: int, remote_result) -> dict:
    from esper.tamiyo.agent_file import AgentFileError, load_agent
    from esper.tamiyo.neural import NeuralTamiyo

    try:
        agent = load_agent(agent_path)
    except AgentFileError as exc:
        sys.exit(f"error: {exc}")
    local = train(world, NeuralTamiyo(agent), seed)
    ops = lambda r: [d.split(" (")[0] for d in r.decisions]  # "epoch: OP"; the reasons differ by design
    # Same ops every epoch, same parameter count and the same validation metric after every epoch: the runs
    # made the same decisions (a different slot, blueprint or blend would change the metric or the size).
    equal = (ops(local) == ops(remote_result) and local.params_total == remote_result.params_total
             and local.metric_history == remote_result.metric_history)
    print(f"in-process: val {local.metric_name} {local.val_metric:.4f} — "
          f"{'identical run' if equal else 'DIFFERENT from the remote run'}")
    return {"val_metric": local.val_metric, "equal": equal}


if __name__ == "__main__":
    main()
