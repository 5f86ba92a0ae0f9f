"""The RLlib RLModule wrapping TamiyoPolicyNet (or the layout-free core): masked autoregressive heads + value function."""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchMultiCategorical
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule

from esper.leyline import ActionSpec
from esper.tamiyo.adapter import TamiyoAdapter
from esper.tamiyo.core import LayoutPolicy, TamiyoCore
from esper.tamiyo.parts import load_core
from esper.tamiyo.policy import TamiyoPolicyNet


class TamiyoRLModule(TorchRLModule, ValueFunctionAPI):
    """Samples in _forward_exploration/_forward_inference; teacher-forces the taken actions in _forward_train,
    so ACTION_DIST_INPUTS are the logits each head had given the earlier heads' actual choices."""

    def setup(self) -> None:
        cfg = self.model_config or {}
        n_features = self.observation_space["features"].shape[0]
        self.nvec = tuple(int(n) for n in self.action_space.nvec)
        hidden = int(cfg.get("hidden", 128))
        if cfg.get("frozen_core"):  # a trained core, frozen, with this domain's adapter to train
            core = load_core(cfg["frozen_core"])
            adapter = TamiyoAdapter(core, cfg["domain"], int(cfg["adapter_rank"]))
            self.net = LayoutPolicy(core, ActionSpec.from_dict(cfg["action_spec"]), adapter)
        elif cfg.get("network", "mlp") == "core":  # the layout-free core, bound to this world's layout
            self.net = LayoutPolicy(TamiyoCore(hidden), ActionSpec.from_dict(cfg["action_spec"]))
        else:
            self.net = TamiyoPolicyNet(n_features, self.nvec, hidden=hidden)

    def _obs(self, batch: dict[str, Any]):
        obs = batch[Columns.OBS]
        return obs["features"], obs["action_mask"]

    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        out = self.net(*self._obs(batch), mode="greedy")
        return {Columns.ACTIONS: out.actions, Columns.ACTION_DIST_INPUTS: out.logits, Columns.ACTION_LOGP: out.logp}

    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        out = self.net(*self._obs(batch), mode="sample")
        return {Columns.ACTIONS: out.actions, Columns.ACTION_DIST_INPUTS: out.logits, Columns.ACTION_LOGP: out.logp}

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        out = self.net(*self._obs(batch), actions=batch[Columns.ACTIONS])
        return {Columns.ACTION_DIST_INPUTS: out.logits}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None):
        return self.net.value(batch[Columns.OBS]["features"])  # reads the batch, never mutates it

    def get_inference_action_dist_cls(self):
        return TorchMultiCategorical.get_partial_dist_cls(input_lens=list(self.nvec))

    def get_exploration_action_dist_cls(self):
        return self.get_inference_action_dist_cls()

    def get_train_action_dist_cls(self):
        return self.get_inference_action_dist_cls()


class TamiyoPPOLearner(PPOTorchLearner):
    """RLlib's PPO learner over the parameters that train: a frozen core's weights never reach Adam (RLlib's
    gradient step would meet their missing gradients), so only the adapter learns and the core stays bit-for-bit."""

    def get_parameters(self, module):
        return [p for p in module.parameters() if p.requires_grad]
