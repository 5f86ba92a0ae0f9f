"""Pretraining Tamiyo from recorded episodes: choose the episodes, clone them with RLlib BC, check the clone.

`behaviour_clone` is the step experiments/pretrain_tamiyo.py runs on a recording; `warm_start_from_recording` is
the main job's whole warm start (record into the run folder, then clone), so PPO starts from data learned in the run.
"""

from __future__ import annotations

import gc
from collections import Counter
import json
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)
WARM_START_FILE = "warm_start.json"


class PretrainDataError(ValueError):
    """A recording that cannot be cloned (missing, another observation layout, too few episodes chosen)."""


def read_recording(folder: Path, expected_features: list[str]) -> tuple[dict, list[dict]]:
    """A finished recording's manifest and episodes, checked against this code's observation layout."""
    import pyarrow.parquet as pq

    manifest_path, index = folder / "manifest.json", folder / "episodes.parquet"
    if not manifest_path.is_file() or not index.is_file() or not (folder / "steps").is_dir():
        raise PretrainDataError(f"{folder} is not a finished recording (manifest.json, episodes.parquet, steps/)")
    try:
        manifest = json.loads(manifest_path.read_text())
        names = manifest["feature_names"]
    except (ValueError, KeyError, TypeError) as exc:
        raise PretrainDataError(f"{manifest_path}: not a recording's manifest ({exc})") from None
    if list(names) != list(expected_features):
        raise PretrainDataError(f"{folder} was recorded with another observation layout than this code's: record it again")
    return manifest, pq.read_table(index).to_pylist()


def choose_episodes(episodes: list[dict], top_pct: float, controllers: list[str] | None = None) -> list[dict]:
    """The best `top_pct`% of the episodes by return (of `controllers` only, if given), best first."""
    if controllers:
        missing = set(controllers) - {e["controller"] for e in episodes}
        if missing:
            raise PretrainDataError(f"the recording has no episodes of {sorted(missing)}")
        episodes = [e for e in episodes if e["controller"] in controllers]
    chosen = sorted(episodes, key=lambda e: -e["episode_return"])[:max(1, round(len(episodes) * top_pct / 100))]
    if len(chosen) < 2:
        raise PretrainDataError(f"{len(chosen)} episode(s) chosen: at least 2 are needed (one is held out)")
    return chosen


def write_split(folder: Path, episodes: list[dict], out: Path, seed: int):
    """out/bc_data/ (the training episodes' steps, shuffled: what BC reads) and the held-out tenth as a table."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from esper.simic.offline.bc import BC_COLUMNS

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(episodes))
    held = {episodes[i]["eps_id"] for i in order[:max(1, len(episodes) // 10)]}
    try:
        steps = pq.read_table(folder / "steps")
    except (OSError, pa.ArrowException) as exc:  # a file that is not Parquet, or steps/ without columns
        raise PretrainDataError(f"{folder / 'steps'}: not readable as recorded steps ({exc})") from None
    if missing := sorted(set(BC_COLUMNS) - set(steps.column_names)):
        raise PretrainDataError(f"{folder / 'steps'}: not recorded steps (columns {missing} are missing)")
    chosen = steps.filter(pc.is_in(steps["eps_id"], value_set=pa.array([e["eps_id"] for e in episodes])))
    is_held = pc.is_in(chosen["eps_id"], value_set=pa.array(sorted(held)))
    train, test = chosen.filter(pc.invert(is_held)), chosen.filter(is_held)
    if train.num_rows == 0:
        raise PretrainDataError(f"{folder}: the chosen episodes have no steps in steps/")
    train = train.select(list(BC_COLUMNS)).take(rng.permutation(train.num_rows))  # an episode's rows apart
    data = out / "bc_data"
    data.mkdir(parents=True, exist_ok=True)
    pq.write_table(train, data / "steps.parquet")
    return data, test


def held_out_fit(net, test) -> dict:
    """How the clone does on steps it never saw: mean log-probability of the recorded action and how often its
    greedy action is the recorded one."""
    import numpy as np
    import torch

    from esper.simic.offline.dataset import unflatten_obs

    cols = test.to_pydict()
    obs = unflatten_obs(cols)
    features, mask = torch.as_tensor(obs["features"]), torch.as_tensor(obs["action_mask"])
    actions = torch.as_tensor(np.stack([np.asarray(a) for a in cols["actions"]]))  # (N, heads)
    with torch.no_grad():
        taught = net(features, mask, actions=actions)
        greedy = net(features, mask, mode="greedy")
    return {"steps": int(len(actions)), "mean_logp": float(taught.logp.mean()),
            "greedy_matches": float((greedy.actions == actions).all(dim=1).float().mean())}


def prepare(folder: Path, out: Path, cfg, top_pct: float, seed: int, controllers: list[str] | None = None) -> dict:
    """Everything BC needs that Ray does not: the recording checked against TrainTamiyoConfig `cfg`'s world, its
    best `top_pct`% chosen and split (out/bc_data/ and the held-out steps). Bad data fails here, before Ray starts."""
    from esper.leyline.experiment import ConfigError
    from esper.leyline.features import feature_names
    from esper.tolaria.builder import action_spec

    if cfg.ppo.network != "mlp":
        raise ConfigError(f"ppo.network: the offline warm start trains the mlp network only (got {cfg.ppo.network!r})")
    spec = action_spec(cfg.world)
    _, episodes = read_recording(folder, list(feature_names(spec)))
    chosen = choose_episodes(episodes, top_pct, controllers)
    out.mkdir(parents=True, exist_ok=True)
    data, test = write_split(folder, chosen, out, seed)
    return {"folder": folder, "out": out, "spec": spec, "recorded": len(episodes), "chosen": chosen, "data": data,
            "test": test, "top_pct": top_pct}


def behaviour_clone(prepared: dict, cfg, iterations: int, batch_size: int, lr: float, seed: int) -> dict:
    """RLlib BC (Ray must be up) on a `prepare`d recording for `cfg`'s width; writes agent.pt and summary.json
    into the prepared output folder and returns the summary."""
    from esper.leyline.features import feature_names
    from esper.provenance import code_version
    from esper.runtime.quiet import quiet_ray_data
    from esper.simic.offline.bc import bc_config, learner_net_state
    from esper.simic.env import spaces_for
    from esper.tamiyo.agent_file import save_agent
    from esper.tamiyo.policy import TamiyoPolicyNet

    spec, chosen, out = prepared["spec"], prepared["chosen"], prepared["out"]
    names = list(feature_names(spec))
    log.info(f"BC on the best {len(chosen)} of {prepared['recorded']} episodes (returns {chosen[-1]['episode_return']:+.3f} "
             f"… {chosen[0]['episode_return']:+.3f}; {_counts(chosen)}); {prepared['test'].num_rows} held-out steps")
    quiet_ray_data()
    algo = bc_config([str(prepared["data"])], spaces_for(spec), cfg.ppo.hidden, batch_size, lr, seed).build_algo()
    start, losses = time.monotonic(), []
    for it in range(1, iterations + 1):
        result = algo.train()
        losses.append(float(result["learners"]["default_policy"]["policy_loss"]))
        if it % max(1, iterations // 5) == 0 or it == iterations:
            log.info(f"  BC {it:>4}/{iterations}  loss (−log p) {losses[-1]:.4f}  ({time.monotonic() - start:.0f}s)")
    state = learner_net_state(algo)
    algo.stop()
    del algo, result
    gc.collect()  # Ray Data's batch iterator goes now, while Ray is up (else it complains at exit)
    net = TamiyoPolicyNet(len(names), spec.nvec, hidden=cfg.ppo.hidden)
    net.load_state_dict(state)
    held = held_out_fit(net.eval(), prepared["test"])
    summary = {"algo": "BC", "data": str(prepared["folder"]), "episodes": len(chosen),
               "recorded_episodes": prepared["recorded"], "chosen_by_controller": _counts(chosen),
               "top_pct": prepared["top_pct"], "iterations": iterations, "final_loss": losses[-1],
               "seconds": round(time.monotonic() - start, 1), "held_out": held}
    save_agent(out / "agent.pt", net, spec, names, cfg.model_dump(mode="json"), code_version(), extra={"pretrain": summary})
    (out / "summary.json").write_text(json.dumps(summary | {"losses": losses}, indent=2))
    log.info(f"  held out: {held['steps']} steps, mean log p {held['mean_logp']:.3f}, greedy = recorded action "
             f"{held['greedy_matches']:.0%}; wrote {out / 'agent.pt'}")
    return summary


def _counts(episodes: list[dict]) -> dict[str, int]:
    """Episodes per controller, most first."""
    return dict(Counter(e["controller"] for e in episodes).most_common())


def warm_start_from_recording(cfg, out: Path, command: str = "") -> tuple[Path, dict]:
    """The main job's warm start (Ray must be up): record cfg.pretrain's controllers into out/offline (continuing
    an interrupted recording), clone the best episodes into out/pretrain/agent.pt. Returns that path and a summary
    (also written to out/pretrain/warm_start.json)."""
    from esper.simic.offline.record import manifest, record, returns_by_controller
    from esper.tamiyo.registry import controller_names
    from esper.tolaria.builder import action_spec

    p, start = cfg.pretrain, time.monotonic()
    controllers = controller_names(p.controllers, action_spec(cfg.world), p.plan_space)
    seeds = list(range(p.episodes))
    episodes = record(cfg.world, controllers, seeds, out / "offline", manifest(cfg, controllers, seeds, command))
    recorded_s = time.monotonic() - start
    by = {c: sum(r) / len(r) for c, r in returns_by_controller(episodes).items()}
    best = max(by, key=by.get)
    log.info(f"recorded {len(episodes)} episodes in {recorded_s:.0f}s; best controller by mean return: {best} "
             f"({by[best]:+.3f}); worst: {min(by.values()):+.3f}")
    prepared = prepare(out / "offline", out / "pretrain", cfg, p.top_pct, cfg.seed)
    clone = behaviour_clone(prepared, cfg, p.iterations, p.batch_size, p.lr, cfg.seed)
    summary = {"record_seconds": round(recorded_s, 1), "recorded_mean_return": by, "bc": clone,
               "seconds": round(time.monotonic() - start, 1)}
    (out / "pretrain" / WARM_START_FILE).write_text(json.dumps(summary, indent=2))
    return out / "pretrain" / "agent.pt", summary
