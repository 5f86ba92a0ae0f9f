"""Batch-first vectorised Simic env: N worlds on one device trained together over one shared data stream.

The control flow is inverted: instead of N envs each looping over its own batches, the data is iterated once
and every batch is dispatched to all N host models, through the trainers' own epoch loop
(`esper.tolaria.trainer.train_on_stream`: a world whose compute budget is spent stops taking batches mid-epoch,
as a lone env's does, while the others go on). What is shared: the data on the device (loaded once), each
training batch's indexing, augmentation and normalisation (done once for N models), the validation batches
(normalised once for the env's lifetime). On a GPU each model trains on its own CUDA stream, so one model's
kernels overlap the next one's launches; on CPU the models run one after another with PyTorch's intra-op threads
(an optional thread pool, `workers`, measured slower on 2 cores). Per step there is no per-model Python work that
grows with the dataset beyond the models' own compute.

Each world is an EsperEnv (same code path as a lone env). Its rewards, observations and models equal those of a
lone EsperEnv reset with the same seed and `options={"data_seed": s}`, where s is the vector env's stream seed.
Autoreset follows gymnasium's NEXT_STEP mode (what RLlib's EnvRunner expects): the step after a world's episode
ends resets that world, and that world does not train in that step.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any, Iterable

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

from esper.simic.env import EsperEnv, world_from
from esper.tolaria.trainer import Epoch, Wait, train_on_stream


class EsperVectorEnv(VectorEnv):
    """`num_envs` Simic worlds stepped batch-first. Observation/action spaces are the batched EsperEnv spaces."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, config: Any = None, num_envs: int = 2, workers: int = 1) -> None:
        """workers > 1 spreads the models over a thread pool. Off by default: on a 2-core CPU it was slower than
        one thread with PyTorch's own intra-op threads (docs/results.md §8); ignored on a GPU (streams instead)."""
        world = world_from(config)
        if world.vary:
            raise ValueError("a world family cannot be stepped batch-first (its worlds may train on different data): "
                             "use ppo.num_envs_per_env_runner: 1")
        first = EsperEnv(world)
        self.envs = [first] + [EsperEnv(world, task=first.task) for _ in range(num_envs - 1)]
        self.num_envs, self.world, self.device = num_envs, world, first.device
        self.single_observation_space, self.single_action_space = first.observation_space, first.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.workers = 1 if self.device.type == "cuda" else max(1, min(workers, num_envs))
        # Optional pool: one intra-op thread per worker, so the cores are shared out by model, not by operator.
        # (torch.set_num_threads in a worker also becomes the default of threads created later in the process.)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="esper-world",
                                        initializer=torch.set_num_threads, initargs=(1,)) if self.workers > 1 else None
        self._streams = [torch.cuda.Stream(self.device) for _ in self.envs] if self.device.type == "cuda" else None
        self._needs_reset = np.zeros(num_envs, dtype=bool)
        self._obs = create_empty_array(self.single_observation_space, num_envs)
        self.stream: Iterable | None = None

    # ------------------------------------------------------------------ gymnasium VectorEnv API
    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        """seed: one int (world i gets seed + i) or one per world. options["data_seed"] seeds the shared stream
        (default: world 0's own episode seed)."""
        seeds = [None] * self.num_envs if seed is None else (
            [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed))
        data = (options or {}).get("data_seed")
        results = [env.reset(seed=s, options=None if data is None else {"data_seed": int(data)})
                   for env, s in zip(self.envs, seeds)]
        self.stream = self.envs[0].trainer.train_loader  # world 0's stream is the one every world trains on
        for env in self.envs:  # ... and never on its own loader
            env.trainer.train_loader = None
        self._needs_reset[:] = False
        infos: dict = {}
        for i, (obs, info) in enumerate(results):
            infos = self._add_info(infos, info, i)
        return self._batch([obs for obs, _ in results]), infos

    def step(self, actions):
        actions = np.asarray(actions).reshape(self.num_envs, -1)
        pending, results, infos = {}, [None] * self.num_envs, {}
        for i, env in enumerate(self.envs):
            if self._needs_reset[i]:  # NEXT_STEP autoreset: this world restarts and sits this epoch out
                obs, info = env.reset()
                env.trainer.train_loader = None
                results[i] = (obs, 0.0, False, False, info)
            else:
                pending[i] = env.begin_step(actions[i])
        losses = self._train_epoch(sorted(pending))
        finished = self._map(lambda i: self.envs[i].finish_step(pending[i], losses[i]), sorted(pending))
        for i, result in zip(sorted(pending), finished):
            results[i] = result
        obs, rewards, terminated, truncated = [], np.zeros(self.num_envs), np.zeros(self.num_envs, bool), np.zeros(self.num_envs, bool)
        for i, (o, r, term, trunc, info) in enumerate(results):
            obs.append(o)
            rewards[i], terminated[i], truncated[i] = r, term, trunc
            infos = self._add_info(infos, info, i)
        self._needs_reset = terminated | truncated
        return self._batch(obs), rewards, terminated, truncated, infos

    def close_extras(self, **kwargs) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # ------------------------------------------------------------------ the batch-first epoch
    def _train_epoch(self, ids: list[int]) -> dict[int, float]:
        """One epoch for the worlds `ids` through the trainers' own loop (train_on_stream) over the shared stream:
        each batch is prepared once and every world still open trains on it (on a GPU, each on its own CUDA stream)."""
        epochs = {i: self.envs[i].trainer.open_epoch() for i in ids}
        streams = {epochs[i]: self._streams[i] for i in ids} if self._streams is not None else {}
        train_on_stream(list(epochs.values()), self.stream, functools.partial(self._deal, streams))
        if self._streams is not None:
            torch.cuda.synchronize(self.device)  # the losses and gradients were made on the models' own streams
        return {i: epoch.close() for i, epoch in epochs.items()}

    def _deal(self, streams: dict[Epoch, torch.cuda.Stream], epochs: list[Epoch], x, y) -> Wait:
        """Start `epochs` on the shared batch: in turn, or spread over the thread pool, whose jobs the returned
        function waits for (meanwhile train_on_stream prepares the next batch)."""
        if self._pool is None:
            self._train_group(streams, epochs, x, y)
            return lambda: None
        # the threads' work is the models' kernels, which run without the GIL
        jobs = [self._pool.submit(self._train_group, streams, epochs[k::self.workers], x, y)
                for k in range(min(self.workers, len(epochs)))]
        return lambda: [job.result() for job in jobs]

    def _map(self, fn, ids: list[int]) -> list:
        """fn over the worlds `ids`, on the pool when there is one (each world's work touches only that world)."""
        return list(self._pool.map(fn, ids)) if self._pool is not None else [fn(i) for i in ids]

    def _train_group(self, streams: dict[Epoch, torch.cuda.Stream], epochs: list[Epoch], x, y) -> None:
        for epoch in epochs:
            stream = streams.get(epoch)
            if stream is not None:
                stream.wait_stream(torch.cuda.current_stream(self.device))  # the batch was made on the default stream
            with torch.cuda.stream(stream) if stream is not None else nullcontext():
                epoch.train(x, y)

    def _batch(self, observations: list) -> Any:
        self._obs = concatenate(self.single_observation_space, observations, self._obs)
        return {k: v.copy() for k, v in self._obs.items()}


def make_esper_env(config: Any = None) -> gym.Env | VectorEnv:
    """RLlib's env factory: one EsperEnv, or an EsperVectorEnv when RLlib asks for `num_envs` of them
    (`gym_env_vectorize_mode="vector_entry_point"`)."""
    config = dict(config or {})
    num_envs = int(config.pop("num_envs", 1))
    if num_envs > 1:
        return EsperVectorEnv(world_from(config), num_envs=num_envs)
    return EsperEnv(world_from(config))
