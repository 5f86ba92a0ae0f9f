"""The Simic environment: one episode = one training run of a host; one step = one Tamiyo decision."""

from __future__ import annotations

import math
from typing import Any

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
from esper.tolaria.datasets import load_bundle
from esper.tolaria.governor import Governor
from esper.tolaria.run import build_signals, train_after_decision
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


class EsperEnv(gym.Env):
    """Observation: Dict(features=(F,), action_mask=(M,)); action: MultiDiscrete over op, slot, blueprint, blend."""

    metadata = {"render_modes": []}

    def __init__(self, config: Any = None) -> None:
        self.world = world_from(config)
        w = self.world
        self.device = actor_device(w.device)
        self.bundle = world_bundle(w, self.device)
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
        return MorphogeneticModel(CNNHost(self.world.host), self.world.kasmina).to(self.device)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(0, 2**31 - 1))
        torch.manual_seed(episode_seed)
        self.model = self._build_model()
        w, b = self.world, self.bundle
        self.trainer = Trainer(self.model, b.train, b.val, w.trainer, b.mean, b.std, seed=episode_seed)
        self.governor = Governor(self.trainer, w.governor)
        val_loss, acc, _ = evaluate_with_counterfactuals(self.model, self.trainer.val_loader)
        self.losses: list[float] = []
        self.val_losses, self.accs = [val_loss], [acc]
        self.counts = {op.name.lower(): 0 for op in Op}
        self.counts.update(fossilized=0, culled=0, invalid=0)
        self.model.listeners.append(self._count_event)
        self.episode_return = 0.0
        return self._obs(), {"episode_seed": episode_seed}

    def step(self, action):
        assert self.model is not None, "call reset() before step()"
        model, w = self.model, self.world
        act = FactoredAction.from_array(np.asarray(action).reshape(-1))
        invalid = not model.masks().allows(act)
        if invalid:  # never executed: the env stays consistent even if a policy ignores the mask
            act = FactoredAction(Op.WAIT)
            self.counts["invalid"] += 1
        self.counts[act.op.name.lower()] += 1
        phi_before = potential(model.reports(), w.reward)
        model.apply(act)
        out = train_after_decision(self.trainer, self.governor)
        rolled_back, acc = out.rolled_back, out.val_accuracy
        self.losses.append(out.train_loss)
        self.val_losses.append(out.val_loss)
        self.accs.append(acc)
        terminal = self.trainer.epoch >= w.trainer.epochs
        pc = model.param_counts()
        terms = compute_reward(
            w.reward, acc_before=self.accs[-2], acc_after=acc, phi_before=phi_before,
            phi_after=potential(model.reports(), w.reward), excess_ratio=pc.excess_ratio,
            episode_steps=w.trainer.epochs, op=act.op, terminal=terminal, rolled_back=rolled_back, invalid=invalid,
        )
        self.episode_return += terms.total
        info = {"op": act.op.name, "val_accuracy": acc, "excess_ratio": pc.excess_ratio, "rolled_back": rolled_back,
                "reward_terms": terms.__dict__, "counts": dict(self.counts)}
        return self._obs(), float(terms.total), bool(terminal or rolled_back), False, info

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
