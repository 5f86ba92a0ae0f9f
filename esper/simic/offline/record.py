"""Record controllers' episodes as an offline dataset, in parallel Ray tasks; a crash loses only the tasks in flight.

Layout of a recording folder: steps/ (Parquet, one row per step: esper/simic/offline/dataset.py's columns), episodes.jsonl
(one line per finished episode, appended as tasks finish: what a resumed recording skips), episodes.parquet (the
same index as a table, written at the end) and manifest.json (the world, the observation layout, the command).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from esper.world import WorldConfig
from esper.runlog import ResumableLog, read_log

log = logging.getLogger(__name__)

FIRST_EVAL_SEED = 100_000
"""Evaluation episodes (evaluate_tamiyo.py, a PPO run's summary) use the seeds from here on: recordings stay below."""
FIRST_VALIDATION_SEED = 50_000
"""A fine-tuned agent is validated against its clone on the seeds from here (below the evaluation seeds, above any
recording of ≤ 50,000 episodes per controller): choosing between them never sees an evaluation episode."""


def _record_chunk(world_json: dict, controller: str, seeds: list[int], out: str) -> list[dict]:
    """A Ray task: play `seeds`, each with a fresh `controller` seeded by the episode seed (so an episode does not
    depend on how the seeds were split into tasks), write their rows to one Parquet file, return the episodes."""
    import pyarrow.parquet as pq

    from esper.simic.env import EsperEnv
    from esper.study.episodes import run_episode
    from esper.simic.offline.dataset import episode_id, episode_rows, rows_to_table
    from esper.tamiyo.registry import controller_factory

    env = EsperEnv(WorldConfig.model_validate(world_json))
    rows, episodes = [], []
    for seed in seeds:
        steps: list[dict] = []
        stats = run_episode(env, controller_factory(controller, env.action_spec, seed=seed)(), seed, steps=steps)
        rows += episode_rows(steps, stats, controller, env.episode_draw, env.world.reward.gamma)
        episodes.append({"eps_id": episode_id(controller, seed), "controller": controller, "episode_seed": seed,
                         "episode_return": stats.episode_return, "final_metric": stats.final_metric, "steps": len(steps),
                         "germinations": stats.germinations, "world": env.episode_draw})
    path = Path(out) / f"{episode_id(controller, seeds[0])}-{len(seeds)}.parquet"
    tmp = path.parent.parent / f".{path.name}.tmp"  # outside steps/, so no reader ever lists it
    pq.write_table(rows_to_table(rows), tmp)
    os.replace(tmp, path)  # a reader never sees half a file
    return episodes


def recorded(folder: Path) -> list[dict]:
    """The episodes a recording folder holds so far (its episodes.jsonl after the recording's identity line; a torn
    last line from a crash is dropped)."""
    return [r for r in read_log(folder / "episodes.jsonl") if "identity" not in r]


def open_recording(folder: Path, world: WorldConfig, resume: bool) -> ResumableLog:
    """A recording's episode log: LogError (one line) if `folder` holds a recording of another world, or any
    recording when not `resume` — call it before Ray starts to fail early."""
    return ResumableLog(folder / "episodes.jsonl", {"world": world.model_dump(mode="json")}, resume)


def manifest(cfg, controllers: list[str], seeds: list[int], command: str) -> dict:
    """What a recording fits — the training config, the observation layout and action heads a clone must match —
    and how it was made. `cfg` is the TrainTamiyoConfig whose world is played."""
    from esper.leyline.features import feature_names
    from esper.provenance import code_version
    from esper.tolaria.builder import action_spec

    spec = action_spec(cfg.world)  # the plane only: no data is loaded
    return {"config": cfg.model_dump(mode="json"), "feature_names": list(feature_names(spec)),
            "action_nvec": [int(n) for n in spec.nvec], "gamma": cfg.world.reward.gamma, "controllers": controllers,
            "seeds": [min(seeds), max(seeds)], "code_version": code_version(), "command": command}


def record(world: WorldConfig, controllers: list[str], seeds: list[int], folder: Path, manifest: dict,
           chunk: int = 4, resume: bool = True) -> list[dict]:
    """Play every controller on every seed (Ray must be up) into `folder`, skipping the episodes it already
    holds; returns every episode of the recording. `manifest` is written as manifest.json by the recording's start
    (a resumed recording keeps its own). The episodes' log (runlog.ResumableLog) refuses to continue a recording of
    another world, and without `resume` any recording already there (LogError)."""
    import ray

    if not seeds or min(seeds) < 0 or max(seeds) >= FIRST_EVAL_SEED:
        raise ValueError(f"recording seeds must lie in [0, {FIRST_EVAL_SEED}): evaluation uses the seeds from there on")
    episodes_log = open_recording(folder, world, resume)
    steps_dir = folder / "steps"
    steps_dir.mkdir(parents=True, exist_ok=True)
    if not (folder / "manifest.json").is_file():
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    done = {(e["controller"], e["episode_seed"]) for e in episodes_log.records}
    jobs = [(c, [s for s in seeds[i:i + chunk] if (c, s) not in done]) for c in controllers
            for i in range(0, len(seeds), chunk)]
    jobs = [(c, chunk_seeds) for c, chunk_seeds in jobs if chunk_seeds]
    log.info(f"recording {sum(len(s) for _, s in jobs)} episodes ({len(done)} already done) of {len(controllers)} "
             f"controller(s) in {len(jobs)} tasks into {folder}")
    task, world_json, start = ray.remote(num_cpus=1)(_record_chunk), world.model_dump(mode="json"), time.monotonic()
    pending = {task.remote(world_json, c, s, str(steps_dir)): (c, s) for c, s in jobs}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        controller, chunk_seeds = pending.pop(ready[0])
        episodes = ray.get(ready[0])
        for e in episodes:
            episodes_log.append(e)
        mean = sum(e["episode_return"] for e in episodes) / len(episodes)
        log.info(f"  [{len(jobs) - len(pending)}/{len(jobs)}] {controller} seeds {chunk_seeds[0]}–{chunk_seeds[-1]}: "
                 f"mean return {mean:+.3f} ({time.monotonic() - start:.0f}s)")
    episodes = recorded(folder)
    _write_index(episodes, folder / "episodes.parquet")
    return episodes


def _write_index(episodes: list[dict], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{**e, "germinations": " ".join(e["germinations"]), "world": json.dumps(e["world"], sort_keys=True)}
            for e in episodes]
    pq.write_table(pa.Table.from_pylist(rows), path)


def returns_by_controller(episodes: list[dict]) -> dict[str, list[float]]:
    by: dict[str, list[float]] = {}
    for e in episodes:
        by.setdefault(e["controller"], []).append(e["episode_return"])
    return by
