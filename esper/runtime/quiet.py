"""Known third-party console noise, dropped from what our entry points print; our own warnings and errors stay.

A user of `make run` should see the progress lines, the summary and where the outputs are — not RLlib telling
every actor that its own module constructor is deprecated. Only the exact messages below are dropped, each for a
reason; anything else (a new warning, every error) still reaches the console.
"""

from __future__ import annotations

import logging

KNOWN_NOISE = (
    # RLlib: we chose the new API stack on purpose; the notice repeats what the config says.
    "on the new API stack! This is the new default behavior",
    # RLlib's TorchRLModule constructs itself through its deprecated config path; printed by every actor.
    "`RLModule(config=[RLModuleConfig object])` has been deprecated",
    # Tune's resource monitor, on machines without NVIDIA's gputil: nothing to monitor here.
    "Install gputil for GPU system monitoring",
    # RLlib's offline reader itself passes the arguments these two notices deprecate (BC pretraining).
    "The argument ``concurrency`` is deprecated",
    "`OfflinePreLearner(module_spec=..)` has been deprecated",
    # Ray Data's answer to our switching its per-dataset progress blocks off (quiet_ray_data below).
    "Progress bars disabled. To enable",
)
SETUP_HOOK = "esper.runtime.quiet.install"
"""Ray's worker_process_setup_hook: every worker installs the filter before it runs a task or an actor."""


class DropKnownNoise(logging.Filter):
    """Drops log records whose message contains one of KNOWN_NOISE."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in KNOWN_NOISE)


_FILTER = DropKnownNoise()


def install() -> None:
    """Filter the handlers Ray's loggers print through (and the loggers themselves, for handlers added later)."""
    for name in ("ray", "ray.rllib", "ray.tune", "ray.data", "ray.rllib.algorithms.algorithm_config",
                 "ray.rllib.core.rl_module.rl_module", "ray.rllib.core.rl_module.torch.torch_rl_module",
                 "ray.rllib.offline.offline_prelearner", "ray.data._internal.util", "ray.data._internal.progress",
                 "ray._common.deprecation", "ray.tune.utils.util", ""):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)


def quiet_ray_data() -> None:
    """Ray Data (under RLlib's offline reader) prints a dozen progress lines per dataset at INFO, whatever Ray's
    logging level, when stdout is not a terminal; our BC prints its own progress. Its warnings still show."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
