"""Does re-attaching a domain's adapter bring its agent back exactly? The vision agent (core + vision adapter, one
agent.pt) plays episodes of held-out worlds; then the core from core.pt is given another domain's adapter, used in
that domain, detached, and given the vision adapter from adapter.pt — and plays the same episodes. Every
decision, return and final metric must be identical.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import torch

from esper.simic.env import EsperEnv
from esper.study.episodes import run_episode
from esper.tamiyo.agent_file import Agent, load_agent
from esper.tamiyo.core import LayoutPolicy
from esper.tamiyo.neural import NeuralTamiyo
from esper.tamiyo.parts import load_adapter, load_core

log = logging.getLogger(__name__)


def _reassembled(vision: Agent, core_path: Path, adapter_path: Path, other: Agent) -> Agent:
    """The vision agent rebuilt from its parts on a core that has decided for another domain in between."""
    core = load_core(core_path)
    other_policy = LayoutPolicy(core, other.spec, other.net.adapter)  # AdapterError unless trained on this core
    features = torch.zeros(4, other_policy.n_features)
    mask = torch.ones(4, other.spec.mask_size)
    policy = LayoutPolicy(core, vision.spec)
    with torch.no_grad():
        other_policy(features, mask, mode="greedy")  # the other domain decides on this core
        policy.attach(other.net.adapter)  # and its adapter sits on the vision layout for a while (adapters are layout-free)
        policy(torch.zeros(4, policy.n_features), torch.ones(4, vision.spec.mask_size), mode="greedy")
    policy.detach()
    policy.attach(load_adapter(adapter_path, core))
    return Agent(policy.eval(), vision.spec, vision.feature_names, vision.manifest, vision.provenance)


@torch.no_grad()
def _same_logits(a: Agent, b: Agent, steps: list[dict]) -> int:
    """At how many of the episode's observations the two agents' masked logits (every head) are bitwise equal."""
    same = 0
    for step in steps:
        f = torch.as_tensor(step["obs"]["features"])[None]
        m = torch.as_tensor(step["obs"]["action_mask"])[None]
        same += int(torch.equal(a.net(f, m, mode="greedy").logits, b.net(f, m, mode="greedy").logits))
    return same


def reattach_check(vision_agent: Path, core: Path, adapter: Path, other_agent: Path, worlds: dict,
                   seeds: list[int]) -> dict:
    """Per world: episodes played by the vision agent and by its reassembled copy, and how many match exactly."""
    vision, other = load_agent(vision_agent), load_agent(other_agent)
    if not isinstance(other.net, LayoutPolicy) or other.net.adapter is None:
        raise ValueError(f"{other_agent} is not a core agent with an adapter")
    rebuilt = _reassembled(vision, core, adapter, other)
    out = {}
    for name, world in worlds.items():
        env = EsperEnv(world)
        rows = []
        for seed in seeds:
            a_steps, b_steps = [], []
            a = run_episode(env, NeuralTamiyo(vision), seed, steps=a_steps)
            b = run_episode(env, NeuralTamiyo(rebuilt), seed, steps=b_steps)
            same = [list(x["action"]) == list(y["action"]) for x, y in zip(a_steps, b_steps)]
            rows.append({"seed": seed, "decisions": len(a_steps), "identical_decisions": int(sum(same)) if
                         len(a_steps) == len(b_steps) else 0, "identical_logits": _same_logits(vision, rebuilt, a_steps),
                         "non_wait_decisions": sum(int(x["action"][0]) != 0 for x in a_steps),
                         "identical_episode": asdict(a) == asdict(b),
                         "final_metric": a.final_metric, "return": a.episode_return, "germinations": a.germinations})
            log.info(f"{name} seed {seed}: {rows[-1]['identical_decisions']}/{len(a_steps)} decisions identical, "
                     f"episode identical: {rows[-1]['identical_episode']}")
        out[name] = rows
    return out
