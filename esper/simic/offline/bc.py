"""Behaviour cloning of recorded episodes with RLlib's BC: the same TamiyoRLModule PPO trains, fed by Ray Data."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.offline.offline_prelearner import OfflinePreLearner

from esper.simic.offline.dataset import OBS_KEYS, unflatten_obs

BC_COLUMNS = ("eps_id", "obs_features", "obs_action_mask", "actions", "rewards", "new_obs_features",
              "new_obs_action_mask", "terminateds", "truncateds")
"""What BC reads of a recorded step (the episode facts are for choosing episodes, not for training)."""


class EsperPreLearner(OfflinePreLearner):
    """RLlib's row-to-episode mapping, after rebuilding the Dict observation {"features", "action_mask"} from its
    flattened columns (RLlib's tabular reader keeps columns as they are stored), so the module sees exactly what
    it sees online — the mask included, which keeps every masked action at probability 0."""

    def _map_to_episodes(self, batch: dict[str, Any], to_numpy: bool = False, **kwargs) -> dict[str, list]:
        n = len(batch["actions"])
        rebuilt = {key: batch[key] for key in ("eps_id", "rewards", "terminateds", "truncateds")}
        rebuilt["actions"] = np.stack([np.asarray(a, dtype=np.int64) for a in batch["actions"]])  # (N, 4)
        for prefix in ("obs", "new_obs"):
            obs = unflatten_obs(batch, prefix)
            rebuilt[prefix] = [{key: obs[key][i] for key in OBS_KEYS} for i in range(n)]
        return super()._map_to_episodes(rebuilt, to_numpy, **kwargs)


def bc_config(data: list[str], spaces: tuple, hidden: int, batch_size: int, lr: float, seed: int):
    """RLlib BC over the Parquet files in `data` for TamiyoRLModule of width `hidden` on (obs, action) `spaces`."""
    from ray.rllib.algorithms.bc import BCConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from esper.simic.ppo.module import TamiyoRLModule

    observation_space, action_space = spaces
    return (
        BCConfig()
        .environment(observation_space=observation_space, action_space=action_space)
        .learners(num_learners=0)
        # grad_clip: a recorded action its own mask forbade would have log-probability ≈ −3e38; the recorder
        # only writes executed (legal) actions, and the clip keeps one bad row from wrecking the weights.
        .training(train_batch_size_per_learner=batch_size, lr=lr, grad_clip=0.5)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=TamiyoRLModule, model_config={"hidden": hidden}))
        .offline_data(input_=data, prelearner_class=EsperPreLearner, dataset_num_iters_per_learner=1,
                      input_read_method_kwargs={"columns": list(BC_COLUMNS)},
                      map_batches_kwargs={"concurrency": 1, "num_cpus": 1},
                      iter_batches_kwargs={"prefetch_batches": 1, "local_shuffle_buffer_size": 4 * batch_size})
        .debugging(seed=seed)
    )


def learner_net_state(algo) -> dict:
    """The trained TamiyoPolicyNet weights, read from the learner (offline there are no env runners to ask)."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    results = algo.learner_group.foreach_learner(
        lambda learner: {k: v.detach().cpu() for k, v in learner.module[DEFAULT_MODULE_ID].net.state_dict().items()})
    result = next(iter(results))
    if not result.ok:
        raise result.get()
    return result.get()
