"""Evaluate controllers on the Simic env in-process, on fixed evaluation seeds."""

from __future__ import annotations

import logging
import statistics
from dataclasses import asdict, dataclass, field

from esper.leyline import Op
from esper.leyline.control import Controller
from esper.simic.env import EsperEnv
from esper.tamiyo.registry import controller_factory

log = logging.getLogger(__name__)


@dataclass
class EpisodeStats:
    controller: str
    seed: int
    final_metric: float
    """The task's final validation metric (accuracy for image classification, −loss for text)."""
    episode_return: float
    germinated: int
    fossilized: int
    culled: int
    final_excess_ratio: float
    rolled_back: bool
    ops: dict[str, int]
    germinations: list[str] = field(default_factory=list)
    """What was grown, in order: "blueprint@slot" per executed GERMINATE."""
    metric_name: str = "accuracy"
    """What final_metric is (the task's metric name)."""


def run_episode(env: EsperEnv, controller: Controller, seed: int, telemetry=None, steps: list | None = None) -> EpisodeStats:
    """One episode with `controller` deciding from the run's own observation (`telemetry` gets its events).
    `steps`, if given, receives one dict per step — obs, the executed action, reward, terminated, truncated,
    new_obs — exactly what the policy saw and did (esper/simic/offline/dataset.py turns them into dataset rows)."""
    obs, _ = env.reset(seed=seed)
    if hasattr(controller, "reset"):
        controller.reset()
    if telemetry is not None:
        env.run.listen(telemetry)
    done, ret, info, grown = False, 0.0, {}, []
    spec = env.action_spec
    while not done:
        action = controller.decide(env.observe()).action
        new_obs, reward, terminated, truncated, info = env.step(action.as_array())
        if steps is not None:
            steps.append({"obs": obs, "action": info["action"], "reward": reward, "terminated": terminated,
                          "truncated": truncated, "new_obs": new_obs})
        obs = new_obs
        if info["op"] == Op.GERMINATE.name:  # executed (an invalid action runs as WAIT)
            grown.append(f"{spec.blueprints[action.blueprint]}@{spec.slots[action.slot]}")
        ret += reward
        done = terminated or truncated
    c = info["counts"]
    return EpisodeStats(controller.name, seed, info["val_metric"], ret, c["germinate"], c["fossilized"], c["culled"],
                        info["excess_ratio"], info["rolled_back"], {op.name.lower(): c[op.name.lower()] for op in Op},
                        grown, env.run.task.metric_name)


def format_metric(value: float, metric: str, signed: bool = False) -> str:
    """A task metric for tables: accuracy (a fraction) in %, any other metric to 4 decimals."""
    return format(value, ("+" if signed else "") + (".2%" if metric == "accuracy" else ".4f"))


def summarise(stats: list[EpisodeStats]) -> dict:
    """mean, std and standard error per numeric field."""
    out: dict = {"episodes": len(stats), "metric_name": stats[0].metric_name if stats else "accuracy"}
    for key in ("final_metric", "episode_return", "germinated", "fossilized", "culled", "final_excess_ratio"):
        vals = [float(getattr(s, key)) for s in stats]
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out[key] = {"mean": statistics.fmean(vals), "std": std, "se": std / max(len(vals), 1) ** 0.5}
    ops = {k: sum(s.ops[k] for s in stats) for k in stats[0].ops} if stats else {}
    total = max(sum(ops.values()), 1)
    out["op_fraction"] = {k: v / total for k, v in ops.items()}
    out["rollbacks"] = sum(s.rolled_back for s in stats)
    grown = [g for s in stats for g in s.germinations]
    out["germinations"] = {g: grown.count(g) / max(len(stats), 1) for g in sorted(set(grown))}  # per episode
    return out


def paired_difference(stats: list[EpisodeStats], baseline: list[EpisodeStats], key: str) -> dict:
    """Mean and standard error of `key`(controller) − `key`(baseline) over episodes played on the same seeds.

    The controllers share each episode's host initialisation and data order, so the per-seed difference removes
    the episode-to-episode variance both share; its standard error is the right yardstick for "beats by k SE"."""
    by_seed = {b.seed: float(getattr(b, key)) for b in baseline}
    if sorted(by_seed) != sorted(s.seed for s in stats):
        raise ValueError("paired comparison needs both controllers to play the same episode seeds")
    diffs = [float(getattr(s, key)) - by_seed[s.seed] for s in stats]
    std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    se = std / len(diffs) ** 0.5
    mean = statistics.fmean(diffs)
    return {"mean": mean, "se": se, "beats_by_2se": mean > 0 and mean > 2 * se}


def play_set(env: EsperEnv, name: str, seeds: list[int], agent=None, progress: str = "") -> list[EpisodeStats]:
    """Controller `name` (esper/tamiyo/registry.py) on the episode `seeds` of `env`, in order: the one way every
    evaluation plays. One controller (its own randomness seeded 0) plays the whole set, reset between episodes, so
    a set's results depend only on the set — the same in process or as one Ray task. With `progress`, each
    finished episode is logged under that label."""
    controller, played = controller_factory(name, env.action_spec, agent)(), []
    for i, s in enumerate(seeds):
        played.append(run_episode(env, controller, s))
        if progress:
            log.info(f"{progress}: {name} episode {i + 1}/{len(seeds)}, return {played[-1].episode_return:+.3f}")
    return played


def _play_remote(world_json: dict, name: str, agent_path: str | None, seeds: list[int]) -> list[dict]:
    """A Ray task: controller `name` (with agent.pt at `agent_path` for trained ones) on its whole episode set."""
    from esper.world import WorldConfig
    from esper.tamiyo.agent_file import load_agent

    env = EsperEnv(WorldConfig.model_validate(world_json))
    agent = load_agent(agent_path) if agent_path else None
    return [asdict(st) for st in play_set(env, name, seeds, agent)]


def evaluate_in_parallel(world, controllers: dict[str, tuple[str, str | None]], seeds: list[int],
                         num_cpus: float = 1, chunk: int | None = None) -> dict[str, list[EpisodeStats]]:
    """Every controller on the same `seeds`, one Ray task per controller (Ray must be up): the same episodes
    `play_set` plays in process. `controllers` maps a label to (controller name, agent.pt path or None); the label
    names its episodes. `num_cpus` per task: 0 when the caller's own actors hold the CPUs but sit idle meanwhile
    (PPO's env runners between iterations). `chunk` splits each set over tasks of that many episodes — only for
    controllers without randomness of their own (a greedy agent), whose episodes do not depend on the split."""
    import ray

    task, world_json = ray.remote(num_cpus=num_cpus)(_play_remote), world.model_dump(mode="json")
    step = chunk or max(len(seeds), 1)
    refs = {label: [task.remote(world_json, name, path, seeds[i:i + step]) for i in range(0, len(seeds), step)]
            for label, (name, path) in controllers.items()}
    return {label: [EpisodeStats(**(d | {"controller": label})) for part in ray.get(parts) for d in part]
            for label, parts in refs.items()}


def compare_paired(stats: dict[str, list[EpisodeStats]], subject: str, baselines: list[str]) -> dict[str, dict]:
    """`subject` − each baseline on final metric and return: paired mean, standard error, beats by 2 SE."""
    return {f"{subject} - {b}": {key: paired_difference(stats[subject], stats[b], key)
                                 for key in ("final_metric", "episode_return")} for b in baselines}
