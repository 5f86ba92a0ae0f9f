"""Tamiyo: the controllers that decide when, where and what to grow (heuristic now; neural policy later)."""

from esper.tamiyo.heuristic import HeuristicConfig, HeuristicTamiyo
from esper.leyline.control import Controller, Decision, Observation
from esper.tamiyo.simple import NoisyTamiyo, PlanTamiyo, RandomTamiyo, ScheduleTamiyo, StaticTamiyo

__all__ = ["Controller", "Decision", "HeuristicConfig", "HeuristicTamiyo", "NoisyTamiyo", "Observation", "PlanTamiyo", "RandomTamiyo", "ScheduleTamiyo", "StaticTamiyo"]
