"""The Simic environment: one episode = one training run of a host; one step = one Tamiyo decision."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import gymnasium as gym
import numpy as np
import torch

from esper.kasmina import MorphogeneticModel
from esper.kasmina.hosts import CNNHost
from esper.leyline import FactoredAction, Op, TrainingSignals
from esper.leyline.features import FEATURE_BOUND, encode, feature_size
from esper.leyline.world import WorldConfig
from esper.runtime.devices import actor_device
from esper.simic.rewards import compute_reward, potential
from esper.tolaria.counterfactual import evaluate_with_counterfactuals
from esper.tolaria.data import DeviceLoader
from esper.tolaria.datasets import DataBundle, load_bundle
from esper.tolaria.governor import Governor
from esper.tolaria.run import build_signals, judge_epoch
from esper.tolaria.trainer import Trainer


def world_from(config: Any) -> WorldConfig:
    """A WorldConfig from a WorldConfig, a plain dict or RLlib's EnvContext (a dict subclass)."""
    if isinstance(config, WorldConfig):
        return config
    return WorldConfig.model_validate(dict(config or {}))


def world_bundle(world: WorldConfig, device: torch.device):
    """The world's data on `device`, validation cut to its fixed `val_images` subset (every run of the world)."""
    b = load_bundle(world.data.source, limit=world.data.limit, val_fraction=world.data.val_fraction, seed=0, device=device)
    if world.val_images is not None and len(b.val) > world.val_images:
        b.val = b.val.subset(torch.arange(world.val_images, device=device))
    return b


@dataclass
class WorldData:
    """A world's data, prepared once and shared by every env that plays the world (a vector env's N worlds too)."""

    bundle: DataBundle
    val_batches: list[tuple[torch.Tensor, torch.Tensor]]
    """Normalised validation batches: validation never changes, so it is prepared once, not every epoch."""


def world_data(world: WorldConfig, device: torch.device) -> WorldData:
    b = world_bundle(world, device)
    val = DeviceLoader(b.val, 512, b.mean, b.std, augment=False, shuffle=False, seed=0)
    return WorldData(b, list(val))


def build_world_model(world: WorldConfig) -> MorphogeneticModel:
    """A fresh model of `world` (host + Kasmina plane) on the CPU: what an episode trains, and whose action_spec
    is the world's — cheap, no data needed."""
    return MorphogeneticModel(CNNHost(world.host), world.kasmina)


@dataclass(frozen=True)
class PendingStep:
    """A decision applied to the plane, waiting for its epoch of training (EsperEnv.begin_step → finish_step)."""

    action: FactoredAction
    invalid: bool
    phi_before: float


class EsperEnv(gym.Env):
    """Observation: Dict(features=(F,), action_mask=(M,)); action: MultiDiscrete over op, slot, blueprint, blend."""

    metadata = {"render_modes": []}

    def __init__(self, config: Any = None, data: WorldData | None = None) -> None:
        self.world = world_from(config)
        w = self.world
        self.device = actor_device(w.device)
        self.data = data if data is not None else world_data(w, self.device)
        self.bundle = self.data.bundle
        self._rng_state = torch.get_rng_state()
        template = self._build_model()
        self.action_spec = template.action_spec
        self.host_params = template.param_counts().host
        n_features = feature_size(self.action_spec)
        self.observation_space = gym.spaces.Dict({
            "features": gym.spaces.Box(-FEATURE_BOUND, FEATURE_BOUND, (n_features,), np.float32),
            "action_mask": gym.spaces.Box(0.0, 1.0, (self.action_spec.mask_size,), np.float32),
        })
        self.action_space = gym.spaces.MultiDiscrete(np.array(self.action_spec.nvec, dtype=np.int64))
        self.model: MorphogeneticModel | None = None

    def _build_model(self) -> MorphogeneticModel:
        return build_world_model(self.world).to(self.device)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """options: {"data_seed": int} fixes the order/augmentation of the training batches (default: the
        episode's own seed); a vector env's worlds share one stream, and this is how a lone env replays it."""
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(0, 2**31 - 1))
        data_seed = int((options or {}).get("data_seed", episode_seed))
        with self.own_rng(reseed=episode_seed):
            self.model = self._build_model()
        w, b = self.world, self.bundle
        self.trainer = Trainer(self.model, b.train, b.val, w.trainer, b.mean, b.std, seed=data_seed)
        self.governor = Governor(self.trainer, w.governor)
        val_loss, acc, _ = evaluate_with_counterfactuals(self.model, self.data.val_batches)
        self.losses: list[float] = []
        self.val_losses, self.accs = [val_loss], [acc]
        self.counts = {op.name.lower(): 0 for op in Op}
        self.counts.update(fossilized=0, culled=0, invalid=0)
        self.model.listeners.append(self._count_event)
        self.episode_return = 0.0
        return self._obs(), {"episode_seed": episode_seed}

    def step(self, action):
        pending = self.begin_step(action)
        return self.finish_step(pending, self.trainer.train_epoch())

    # A step in two halves around the epoch's training, so a vector env can train many worlds batch-first.
    def begin_step(self, action) -> PendingStep:
        """Check the action against the masks (an illegal one is executed as WAIT) and apply it to the plane."""
        assert self.model is not None, "call reset() before step()"
        model = self.model
        act = FactoredAction.from_array(np.asarray(action).reshape(-1))
        invalid = not model.masks().allows(act)
        if invalid:  # never executed: the env stays consistent even if a policy ignores the mask
            act = FactoredAction(Op.WAIT)
            self.counts["invalid"] += 1
        self.counts[act.op.name.lower()] += 1
        phi_before = potential(model.reports(), self.world.reward)
        with self.own_rng():  # a germinated seed's initial weights come from this env's own stream
            model.apply(act)
        return PendingStep(act, invalid, phi_before)

    def finish_step(self, pending: PendingStep, train_loss: float):
        """After the epoch's training: Governor, evaluation + counterfactuals, reward; the gymnasium step tuple."""
        model, w, act = self.model, self.world, pending.action
        out = judge_epoch(self.trainer, self.governor, train_loss, self.data.val_batches)
        rolled_back, acc = out.rolled_back, out.val_accuracy
        self.losses.append(out.train_loss)
        self.val_losses.append(out.val_loss)
        self.accs.append(acc)
        terminal = self.trainer.epoch >= w.trainer.epochs
        pc = model.param_counts()
        terms = compute_reward(
            w.reward, acc_before=self.accs[-2], acc_after=acc, phi_before=pending.phi_before,
            phi_after=potential(model.reports(), w.reward), excess_ratio=pc.excess_ratio,
            episode_steps=w.trainer.epochs, op=act.op, terminal=terminal, rolled_back=rolled_back, invalid=pending.invalid,
        )
        self.episode_return += terms.total
        info = {"op": act.op.name, "val_accuracy": acc, "excess_ratio": pc.excess_ratio, "rolled_back": rolled_back,
                "reward_terms": terms.__dict__, "counts": dict(self.counts)}
        return self._obs(), float(terms.total), bool(terminal or rolled_back), False, info

    @contextmanager
    def own_rng(self, reseed: int | None = None) -> Iterator[None]:
        """Run with this env's own torch RNG stream (optionally reseeded), leaving the process's stream as it was:
        what a germinated seed starts from then depends on this env alone, not on whatever else (a policy's
        sampling, the other worlds of a vector env) drew random numbers in between."""
        outside = torch.get_rng_state()
        if reseed is None:
            torch.set_rng_state(self._rng_state)
        else:
            torch.manual_seed(reseed)
        try:
            yield
        finally:
            self._rng_state = torch.get_rng_state()
            torch.set_rng_state(outside)

    # ------------------------------------------------------------------ helpers
    def _count_event(self, event) -> None:
        if event.kind in ("fossilize", "cull"):
            self.counts["fossilized" if event.kind == "fossilize" else "culled"] += 1

    def signals(self) -> TrainingSignals:
        return build_signals(self.trainer, self.losses, self.val_losses, self.accs,
                             initial_loss=math.log(self.world.host.num_classes))

    def _obs(self) -> dict[str, np.ndarray]:
        reports = self.model.reports()
        features = encode(self.action_spec, self.signals(), reports, self.world.host.num_classes)
        return {"features": features, "action_mask": self.model.masks().flat()}
