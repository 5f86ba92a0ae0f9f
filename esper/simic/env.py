"""The Simic environment: one episode = one Run of a world; one step = one Tamiyo decision and one epoch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from esper.kasmina import MorphogeneticModel
from esper.leyline import FactoredAction, Op
from esper.leyline.control import Observation
from esper.leyline.family import corner_worlds, draw_world, with_values
from esper.leyline.features import FEATURE_BOUND, encode, feature_size
from esper.world import WorldConfig
from esper.runtime.devices import actor_device
from esper.simic.rewards import RewardStep, compute_reward, potential
from esper.tolaria.builder import action_spec, build_model, build_run, build_world_task, check_output_size
from esper.tolaria.run import Run
from esper.tolaria.task import Task
from esper.tolaria.trainer import Trainer

logger = logging.getLogger(__name__)


def world_from(config: Any) -> WorldConfig:
    """A WorldConfig from a WorldConfig, a plain dict or RLlib's EnvContext (a dict subclass)."""
    if isinstance(config, WorldConfig):
        return config
    return WorldConfig.model_validate(dict(config or {}))


@dataclass(frozen=True)
class PendingStep:
    """A decision applied to the plane, waiting for its epoch of training (EsperEnv.begin_step → finish_step)."""

    action: FactoredAction
    invalid: bool
    phi_before: float
    flops_before: float
    pruned_params: int = 0
    """Parameters of withered fossils the decisions culled (Tamiyo's or Emrakul's)."""


def spaces_for(spec) -> tuple[gym.spaces.Dict, gym.spaces.MultiDiscrete]:
    """The observation (features + flat action mask) and factored action spaces of a plane's ActionSpec."""
    observation = gym.spaces.Dict({
        "features": gym.spaces.Box(-FEATURE_BOUND, FEATURE_BOUND, (feature_size(spec),), np.float32),
        "action_mask": gym.spaces.Box(0.0, 1.0, (spec.mask_size,), np.float32),
    })
    return observation, gym.spaces.MultiDiscrete(np.array(spec.nvec, dtype=np.int64))


class EsperEnv(gym.Env):
    """Observation: Dict(features=(F,), action_mask=(M,)); action: MultiDiscrete over op, slot, blueprint, blend."""

    metadata = {"render_modes": []}

    def __init__(self, config: Any = None, task: Task | None = None) -> None:
        """`task`: the world's task, already loaded (a vector env's worlds share one); default: load it.
        A world family (`world.vary`) draws a world per episode (`episode_world`, logged in reset's info)."""
        self.world = self.episode_world = world_from(config)
        self.device = actor_device(self.world.device)
        if task is not None and self.world.vary:
            raise ValueError("a world family loads its own tasks (its worlds may differ in data): pass no task")
        self._tasks: dict[str, Task] = {}
        self.task = task if task is not None else self._task_of(self.world)
        template = build_model(self.world)
        check_output_size(template.to(self.device), self.task)  # a host/task mismatch fails here, not mid-episode
        self.action_spec = template.action_spec
        self._check_family_layout()
        self.host_params = template.param_counts().host
        self.observation_space, self.action_space = spaces_for(self.action_spec)
        self.run: Run | None = None

    @property
    def model(self) -> MorphogeneticModel:
        return self.run.model

    @property
    def trainer(self) -> Trainer:
        return self.run.trainer

    def _task_of(self, world: WorldConfig) -> Task:
        """The task of `world`, loaded once per distinct data config (and validation cut) for the env's life."""
        key = world.data.model_dump_json() + f"|{world.val_images}"
        if key not in self._tasks:
            self._tasks[key] = build_world_task(world, self.device)
        return self._tasks[key]

    def _check_family_layout(self) -> None:
        """Every world of the family must offer one action layout (slots, blueprints, blends): one policy plays
        them all. Checked on every choice and both ends of every range, before the first episode."""
        for path, value in corner_worlds(self.world):
            spec = action_spec(with_values(self.world, {path: value}))
            if (spec.slots, spec.blueprints, spec.nvec) != (self.action_spec.slots, self.action_spec.blueprints,
                                                            self.action_spec.nvec):
                raise ValueError(f"vary.{path} = {value!r} changes the action layout (slots {spec.slots}, blueprints "
                                 f"{spec.blueprints}): every world of a family must offer the same actions")

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """options: {"data_seed": int} fixes the order/augmentation of the training batches (default: the
        episode's own seed); a vector env's worlds share one stream, and this is how a lone env replays it."""
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(0, 2**31 - 1))
        data_seed = int((options or {}).get("data_seed", episode_seed))
        drawn: dict = {}
        if self.world.vary:  # a family: this episode's world, drawn from the episode's own generator
            self.episode_world, drawn = draw_world(self.world, self.np_random)
            self.task = self._task_of(self.episode_world)
            logger.info("episode %d: world %s", episode_seed, drawn)
        self.run = build_run(self.episode_world, self.task, seed=episode_seed, data_seed=data_seed, device=self.device,
                             capacity_price=self.episode_world.reward.rent_lambda)
        self.counts = {op.name.lower(): 0 for op in Op}
        self.counts.update(fossilized=0, culled=0, invalid=0, pruned=0, revived=0)
        self.run.listen(self._count_event)
        self.episode_return, self.episode_draw, self._pruned_params = 0.0, drawn, 0
        return self._obs(), {"episode_seed": episode_seed, "world": drawn}

    def step(self, action):
        pending = self.begin_step(action)
        return self.finish_step(pending, self.trainer.train_epoch())

    # A step in two halves around the epoch's training, so a vector env can train many worlds batch-first.
    def begin_step(self, action) -> PendingStep:
        """Check the action against the masks (an illegal one is executed as WAIT) and apply it to the plane."""
        assert self.run is not None, "call reset() before step()"
        model = self.run.model
        act = FactoredAction.from_array(np.asarray(action).reshape(-1))
        invalid = not model.masks().allows(act)
        if invalid:  # never executed: the env stays consistent even if a policy ignores the mask
            act = FactoredAction(Op.WAIT)
            self.counts["invalid"] += 1
        self.counts[act.op.name.lower()] += 1
        phi_before = potential(model.reports(), self.episode_world.reward)
        self.run.apply(act, "invalid action, run as WAIT" if invalid else "")
        return PendingStep(act, invalid, phi_before, self.trainer.train_flops, self._take_pruned())

    def finish_step(self, pending: PendingStep, train_loss: float):
        """After the epoch's training: the run judges the epoch; reward; the gymnasium step tuple."""
        run, w = self.run, self.episode_world
        out = run.finish_epoch(train_loss)
        terminal = run.done
        pc = run.model.param_counts()
        terms = compute_reward(w.reward, RewardStep(
            metric_before=run.metrics[-2], metric_after=out.val_metric, phi_before=pending.phi_before,
            phi_after=potential(run.model.reports(), w.reward), excess_ratio=pc.excess_ratio,
            episode_steps=w.trainer.epochs, step_flops=run.trainer.train_flops - pending.flops_before,
            episode_flops=run.trainer.compute_budget, op=pending.action.op, terminal=terminal,
            rolled_back=out.rolled_back, invalid=pending.invalid,
            pruned_ratio=pending.pruned_params / max(pc.host, 1)))
        reward = sum(terms.values())
        self.episode_return += reward
        info = {"op": pending.action.op.name, "action": pending.action.as_array(),  # the executed action
                "val_metric": out.val_metric, "excess_ratio": pc.excess_ratio,
                "budget_spent": run.trainer.train_flops / run.trainer.compute_budget,
                "rolled_back": out.rolled_back, "reward_terms": terms, "counts": dict(self.counts)}
        return self._obs(), float(reward), bool(terminal or out.rolled_back), False, info

    # ------------------------------------------------------------------ helpers
    def _count_event(self, event) -> None:
        if event.kind in ("fossilize", "cull"):
            self.counts["fossilized" if event.kind == "fossilize" else "culled"] += 1
        elif event.kind == "audit" and event.verdict in ("cull", "revive"):
            self.counts["pruned" if event.verdict == "cull" else "revived"] += 1
            if event.verdict == "cull":
                self._pruned_params += event.seed_params

    def _take_pruned(self) -> int:
        """Parameters pruned since the last call (the decisions just applied)."""
        pruned, self._pruned_params = self._pruned_params, 0
        return pruned

    def observe(self) -> Observation:
        """What a controller sees now (the run's one observation path)."""
        return self.run.observe()

    def _obs(self) -> dict[str, np.ndarray]:
        obs = self.run.observe()
        return {"features": encode(obs.spec, obs.signals, obs.reports), "action_mask": obs.masks.flat()}
