"""Tamiyo: the controllers that decide when, where and what to grow — each registered by name (registry.py)."""

from esper.leyline.control import Controller, Decision, Observation
from esper.tamiyo.heuristic import HeuristicConfig, HeuristicTamiyo
from esper.tamiyo.neural import NeuralTamiyo
from esper.tamiyo.registry import CONTROLLERS, controller_factory, register_controller
from esper.tamiyo.simple import NoisyTamiyo, PlanTamiyo, RandomTamiyo, ScheduleTamiyo, WaitTamiyo
from esper.tamiyo import audits  # noqa: E402,F401  (registers Emrakul's audits as the controller `emrakul`)

__all__ = ["CONTROLLERS", "Controller", "Decision", "HeuristicConfig", "HeuristicTamiyo", "NeuralTamiyo",
           "NoisyTamiyo", "Observation", "PlanTamiyo", "RandomTamiyo", "ScheduleTamiyo", "WaitTamiyo",
           "controller_factory", "register_controller"]
