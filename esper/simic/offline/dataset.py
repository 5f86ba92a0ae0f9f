"""Offline data: recorded episodes as rows RLlib's offline API reads — one row per step, the Dict observation
flattened into plain columns (RLlib's tabular reader does not rebuild Dict spaces), episode facts on every row."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from esper.study.episodes import EpisodeStats

OBS_KEYS = ("features", "action_mask")
"""The env's Dict observation, stored as obs_<key> and new_obs_<key> columns."""
STEP_COLUMNS = ("eps_id", "t", "obs_features", "obs_action_mask", "actions", "rewards", "new_obs_features",
                "new_obs_action_mask", "terminateds", "truncateds", "returns_to_go")
"""RLlib's column names (offline_prelearner.SCHEMA) for what a step was, plus the discounted return from it."""
EPISODE_COLUMNS = ("controller", "episode_seed", "episode_return", "final_metric", "world")
"""What the whole episode was, repeated on its rows so a dataset can be filtered (e.g. its best episodes)."""


def episode_id(controller: str, seed: int) -> str:
    """Stable and unique per (controller, episode seed); hex only — RLlib appends `_i` to ids without an underscore."""
    return hashlib.sha1(f"{controller}|{seed}".encode()).hexdigest()[:20]


def episode_rows(steps: list[dict], stats: EpisodeStats, controller: str, world: dict, gamma: float) -> list[dict]:
    """The rows of one episode: `steps` as `run_episode(..., steps=…)` recorded them, `stats` its summary,
    `world` what a family drew for it (empty for a fixed world), `gamma` the discount of returns_to_go."""
    if not steps:
        raise ValueError("an episode without steps cannot be recorded")
    to_go, g = [], 0.0
    for step in reversed(steps):  # G_t = r_t + γ·G_{t+1}
        g = float(step["reward"]) + gamma * g
        to_go.append(g)
    to_go.reverse()
    eps_id, facts = episode_id(controller, stats.seed), {
        "controller": controller, "episode_seed": stats.seed, "episode_return": stats.episode_return,
        "final_metric": stats.final_metric, "world": json.dumps(world, sort_keys=True)}
    rows = []
    for t, (step, g) in enumerate(zip(steps, to_go)):
        row = {"eps_id": eps_id, "t": t, "actions": np.asarray(step["action"], dtype=np.int64),
               "rewards": float(step["reward"]), "terminateds": bool(step["terminated"]),
               "truncateds": bool(step["truncated"]), "returns_to_go": g}
        for key in OBS_KEYS:
            row[f"obs_{key}"] = np.asarray(step["obs"][key], dtype=np.float32)
            row[f"new_obs_{key}"] = np.asarray(step["new_obs"][key], dtype=np.float32)
        rows.append(row | facts)
    return rows


def rows_to_table(rows: list[dict]):
    """A pyarrow Table of rows, vectors as fixed-size lists (so a reader gets (N, width) arrays back)."""
    import pyarrow as pa

    columns = {}
    for name in STEP_COLUMNS + EPISODE_COLUMNS:
        values = [r[name] for r in rows]
        if isinstance(values[0], np.ndarray):
            flat = np.stack(values)  # (rows, width)
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])
        else:
            columns[name] = pa.array(values)
    return pa.table(columns)


def unflatten_obs(batch: dict, prefix: str = "obs") -> dict[str, np.ndarray]:
    """The Dict observation back from a batch of rows: {"features": (N, F), "action_mask": (N, M)}."""
    return {key: np.stack([np.asarray(v, dtype=np.float32) for v in batch[f"{prefix}_{key}"]]) for key in OBS_KEYS}
