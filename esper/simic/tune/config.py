"""Config of a Ray Tune sweep over the reward economy (experiments/tune_rewards.py; presets in experiments/presets/)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from esper.leyline.base import EsperModel


class Dimension(EsperModel):
    """One swept field: exactly one of grid / choice / uniform / loguniform."""

    grid: list[float] | None = None
    """Every value, in every combination with the other grid dimensions (× num_samples)."""
    choice: list[float] | None = None
    """One value drawn per trial."""
    uniform: tuple[float, float] | None = None
    """Drawn uniformly from [low, high] per trial."""
    loguniform: tuple[float, float] | None = None
    """Drawn log-uniformly from [low, high] per trial (low > 0)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> "Dimension":
        given = [k for k in ("grid", "choice", "uniform", "loguniform") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of grid, choice, uniform, loguniform (got {given or 'none'})")
        for k in ("uniform", "loguniform"):
            lo_hi = getattr(self, k)
            if lo_hi is not None and not (lo_hi[0] < lo_hi[1] and (k == "uniform" or lo_hi[0] > 0)):
                raise ValueError(f"{k} needs low < high{' and low > 0' if k == 'loguniform' else ''}, got {list(lo_hi)}")
        if (self.grid is not None and not self.grid) or (self.choice is not None and not self.choice):
            raise ValueError("grid/choice needs at least one value")
        return self

    def to_tune(self):
        from ray import tune

        if self.grid is not None:
            return tune.grid_search(list(self.grid))
        if self.choice is not None:
            return tune.choice(list(self.choice))
        if self.uniform is not None:
            return tune.uniform(*self.uniform)
        return tune.loguniform(*self.loguniform)


class SweepConfig(EsperModel):
    """A Tune experiment: which base training, what to sweep, how to schedule and keep trials."""

    base: str = "smoke"
    """Training preset (name in experiments/presets/ or a YAML path) every trial starts from."""
    base_overrides: list[str] = []
    """`key.sub=value` overrides applied to the base before sampling (e.g. ppo.lr=0.001)."""
    search: dict[str, Dimension]
    """Swept fields of the training config, by dotted path (e.g. world.reward.rent_lambda)."""
    iterations: int = Field(4, ge=1)
    """PPO iterations per trial."""
    eval_episodes: int = Field(8, ge=1)
    """Greedy evaluation episodes (fixed seeds, the same for every trial) at the end of each trial."""
    objective_rent: float | None = Field(0.05, ge=0)
    """Fixed rent of the objective: eval accuracy − objective_rent × excess parameter ratio (whatever λ trained).
    None: the objective is the mean evaluation return, each episode paid at its own world's rent — for a world
    family, whose rent varies by episode."""
    num_samples: int = Field(1, ge=1)
    """Tune num_samples: repeats of the grid, or random draws."""
    scheduler: Literal["fifo", "asha", "pbt"] = "fifo"
    """fifo = run every trial to the end; asha = stop poor trials early; pbt = Population Based Training."""
    grace_period: int = Field(2, ge=1)
    """ASHA: iterations before a trial can be stopped."""
    perturbation_interval: int = Field(2, ge=1)
    """PBT: iterations between exploit/explore steps (PBT perturbs the uniform/loguniform/choice dimensions)."""
    max_concurrent: int | None = Field(None, ge=1)
    """Trials at once; None = one per CPU of the cluster."""
    trial_cpus: float = Field(1.0, gt=0)
    """CPUs each trial reserves (the trial steps its env in its own actor)."""
    max_failures: int = Field(2, ge=0)
    """A crashed trial restarts from its last checkpoint up to this many times."""
    checkpoint_every: int = Field(1, ge=1)
    """Checkpoint every this many iterations (and at the end, with the trial's agent.pt)."""

    @model_validator(mode="after")
    def _check(self) -> "SweepConfig":
        if not self.search:
            raise ValueError("search must name at least one field to sweep")
        if self.scheduler == "pbt" and all(d.grid is not None for d in self.search.values()):
            raise ValueError("pbt needs at least one uniform, loguniform or choice dimension to perturb")
        return self
