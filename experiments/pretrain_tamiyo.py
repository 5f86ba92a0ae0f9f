"""Pretrain Tamiyo by behaviour cloning (RLlib BC) on recorded episodes; writes agent.pt for PPO to fine-tune.

    python experiments/record_episodes.py --preset smoke --episodes 16 --out runs/offline/smoke
    python experiments/pretrain_tamiyo.py --data runs/offline/smoke --out runs/bc/smoke --top-pct 50
    python experiments/evaluate_tamiyo.py --agent runs/bc/smoke/agent.pt --episodes 20
    python experiments/ppo_multislot.py --preset smoke --set ppo.init_agent=runs/bc/smoke/agent.pt   # fine-tune

Episodes are chosen from the recording's index (controllers, then the best --top-pct by return); a tenth of
them is held out to report how well the clone predicts actions it was not trained on. The clone is the same
masked, factored TamiyoRLModule PPO trains, so its agent.pt loads anywhere a PPO agent does.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path


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
    args = p.parse_args()
    if not 0 < args.top_pct <= 100 or args.iterations < 1 or args.batch_size < 1 or args.lr <= 0:
        p.error("--top-pct must be in (0, 100]; --iterations, --batch-size and --lr positive")
    return args


def _load(args):
    """The recording's config, plane and chosen episodes — or a one-line error naming what is wrong."""
    import pyarrow.parquet as pq

    from esper.leyline.experiment import ConfigError
    from esper.leyline.features import feature_names
    from esper.simic.config import TrainTamiyoConfig
    from esper.tolaria.builder import build_model

    manifest_path, index = args.data / "manifest.json", args.data / "episodes.parquet"
    if not manifest_path.is_file() or not index.is_file() or not (args.data / "steps").is_dir():
        sys.exit(f"error: {args.data} is not a finished record_episodes.py output (manifest.json, episodes.parquet, steps/)")
    manifest = json.loads(manifest_path.read_text())
    try:
        cfg = TrainTamiyoConfig.model_validate(manifest["config"])
    except (ValueError, KeyError) as exc:
        sys.exit(f"error: {manifest_path}: not a recording's manifest ({exc})")
    try:
        spec = build_model(cfg.world).action_spec
    except ConfigError as exc:
        sys.exit(f"error: {manifest_path}: {exc}")
    if list(feature_names(spec)) != manifest["feature_names"]:
        sys.exit(f"error: {args.data} was recorded with another observation layout than this code's: record it again")
    episodes = pq.read_table(index).to_pylist()
    if args.controllers:
        missing = set(args.controllers) - {e["controller"] for e in episodes}
        if missing:
            sys.exit(f"error: the recording has no episodes of {sorted(missing)}")
        episodes = [e for e in episodes if e["controller"] in args.controllers]
    episodes.sort(key=lambda e: -e["episode_return"])
    episodes = episodes[:max(1, round(len(episodes) * args.top_pct / 100))]
    if len(episodes) < 2:
        sys.exit(f"error: {len(episodes)} episode(s) chosen: at least 2 are needed (one is held out)")
    return cfg, spec, episodes


def _write_split(args, episodes: list[dict]) -> tuple[Path, list]:
    """bc_data/ (the training episodes' steps, shuffled) and the held-out episodes' steps as a table."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from esper.simic.bc import BC_COLUMNS

    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(episodes))
    held = {episodes[i]["eps_id"] for i in order[:max(1, len(episodes) // 10)]}
    steps = pq.read_table(args.data / "steps")
    chosen = steps.filter(pc.is_in(steps["eps_id"], value_set=pa.array([e["eps_id"] for e in episodes])))
    is_held = pc.is_in(chosen["eps_id"], value_set=pa.array(sorted(held)))
    train, test = chosen.filter(pc.invert(is_held)), chosen.filter(is_held)
    train = train.select(list(BC_COLUMNS)).take(rng.permutation(train.num_rows))  # rows of an episode apart
    folder = args.out / "bc_data"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(train, folder / "steps.parquet")
    return folder, test


def _held_out(net, test) -> dict:
    """How the clone does on steps it never saw: mean log-probability of the recorded action and how often its
    greedy action equals it; and the largest probability it puts on a masked action (must be 0)."""
    import numpy as np
    import torch

    from esper.simic.offline import unflatten_obs

    cols = test.to_pydict()
    obs = unflatten_obs(cols)
    features, mask = torch.as_tensor(obs["features"]), torch.as_tensor(obs["action_mask"])
    actions = torch.as_tensor(np.stack([np.asarray(a) for a in cols["actions"]]))
    with torch.no_grad():
        taught = net(features, mask, actions=actions)
        greedy = net(features, mask, mode="greedy")
    return {"steps": int(len(actions)), "mean_logp": float(taught.logp.mean()),
            "greedy_matches": float((greedy.actions == actions).all(dim=1).float().mean())}


def main() -> None:
    args = _parse()
    cfg, spec, episodes = _load(args)
    args.out.mkdir(parents=True, exist_ok=True)
    data, test = _write_split(args, episodes)
    print(f"BC on {len(episodes)} episodes of {sorted({e['controller'] for e in episodes})} "
          f"(returns {episodes[-1]['episode_return']:+.3f} … {episodes[0]['episode_return']:+.3f}); "
          f"{test.num_rows} held-out steps", flush=True)
    import ray

    from esper.leyline.features import feature_names
    from esper.provenance import code_version
    from esper.runtime import local_ray
    from esper.simic.bc import bc_config, learner_net_state
    from esper.simic.env import spaces_for
    from esper.tamiyo.agent_file import save_agent
    from esper.tamiyo.policy import TamiyoPolicyNet

    local_ray.init(None, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        algo = bc_config([str(data)], spaces_for(spec), cfg.ppo.hidden, args.batch_size, args.lr, args.seed).build()
        start, losses = time.monotonic(), []
        for it in range(1, args.iterations + 1):
            result = algo.train()
            losses.append(float(result["learners"]["default_policy"]["policy_loss"]))
            if it % max(1, args.iterations // 10) == 0 or it == args.iterations:
                print(f"iter {it:>4}/{args.iterations}  BC loss (−log p) {losses[-1]:.4f}  ({time.monotonic() - start:.0f}s)",
                      flush=True)
        state = learner_net_state(algo)
        algo.stop()
        del algo, result
        gc.collect()  # Ray Data's batch iterator goes now, while Ray is up (else it complains at exit)
    finally:
        ray.shutdown()
    net = TamiyoPolicyNet(len(feature_names(spec)), spec.nvec, hidden=cfg.ppo.hidden)
    net.load_state_dict(state)
    held = _held_out(net.eval(), test)
    pretrain = {"algo": "BC", "data": str(args.data), "episodes": len(episodes), "controllers": args.controllers,
                "top_pct": args.top_pct, "iterations": args.iterations, "final_loss": losses[-1], "held_out": held}
    save_agent(args.out / "agent.pt", net, spec, list(feature_names(spec)), cfg.model_dump(mode="json"), code_version(),
               extra={"pretrain": pretrain})
    (args.out / "summary.json").write_text(json.dumps(pretrain | {"losses": losses}, indent=2))
    print(f"held out: {held['steps']} steps, mean log p {held['mean_logp']:.3f}, greedy = recorded action "
          f"{held['greedy_matches']:.0%}\nwrote {args.out / 'agent.pt'}; evaluate with:\n"
          f"  python experiments/evaluate_tamiyo.py --agent {args.out / 'agent.pt'} --episodes 20")


if __name__ == "__main__":
    main()
