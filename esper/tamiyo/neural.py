"""A Controller backed by a trained policy (agent.pt): same Observation in, same factored action out."""

from __future__ import annotations

import torch

from esper.leyline import FactoredAction, Op
from esper.leyline.control import Decision, Observation
from esper.leyline.features import encode
from esper.tamiyo.agent_file import Agent
from esper.tamiyo.registry import ControllerRequest, register_controller


class NeuralTamiyo:
    """Greedy by default; `sample=True` draws from the masked policy with its own seeded generator."""

    def __init__(self, agent: Agent, sample: bool = False, seed: int = 0) -> None:
        self.agent, self.sample = agent, sample
        self.name = "ppo-sampled" if sample else "ppo"
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def decide(self, obs: Observation) -> Decision:
        features = torch.as_tensor(encode(obs.spec, obs.signals, obs.reports))[None]
        mask = torch.as_tensor(obs.masks.flat())[None]
        out = self.agent.net(features, mask, mode="sample" if self.sample else "greedy", generator=self.generator)
        action = FactoredAction.from_array(out.actions[0].tolist())
        if not obs.masks.allows(action):  # cannot happen with a sound mask; never execute it anyway
            return Decision(FactoredAction(Op.WAIT), "policy proposed a masked action")
        return Decision(action, f"policy p={float(out.logp.exp()):.2f}")


@register_controller("ppo", help="a trained Tamiyo (agent.pt), greedy", needs_agent=True)
def _greedy(request: ControllerRequest):
    return lambda: NeuralTamiyo(request.agent, seed=request.seed)


@register_controller("ppo-sampled", help="a trained Tamiyo (agent.pt), sampling its policy", needs_agent=True)
def _sampled(request: ControllerRequest):
    return lambda: NeuralTamiyo(request.agent, sample=True, seed=request.seed)


@register_controller("agent:", help="PATH (another agent.pt, greedy: two trained agents on the same episodes)")
def _other_agent(request: ControllerRequest):
    from esper.leyline.features import feature_names
    from esper.tamiyo.agent_file import AgentFileError, load_agent

    if not request.argument:
        raise ValueError(f"{request.name!r}: give the agent file, e.g. agent:runs/ppo/text/agent.pt")
    try:
        agent = load_agent(request.argument, expected_features=feature_names(request.spec) if request.spec else None)
    except AgentFileError as exc:
        raise ValueError(f"{request.name!r}: {exc}") from None
    if request.spec is not None and agent.spec.to_dict() != request.spec.to_dict():
        raise ValueError(f"{request.name!r} was trained on another action plane (heads {list(agent.spec.nvec)}, "
                         f"this world {list(request.spec.nvec)})")
    return lambda: NeuralTamiyo(agent, seed=request.seed)
