"""What the plane and the trainer report each step: per-slot reports and global training signals."""

from __future__ import annotations

from dataclasses import dataclass, field

from esper.leyline.blending import BlendCurve
from esper.leyline.stages import Stage


@dataclass(frozen=True)
class SlotState:
    """Everything a slot knows besides its module: the one description of slot state. Controllers, masks, rewards
    and telemetry read it as a `SlotReport`, checkpoints store it as a `SlotManifest`, the gates judge it.
    A new fact about a slot is one field here (plus one in SlotManifest if checkpoints must keep it)."""

    name: str
    """Injection point name."""
    stage: Stage = Stage.DORMANT
    """Lifecycle stage."""
    blueprint: str | None = None
    """Blueprint of the seed in the slot (None when empty)."""
    tempo: int | None = None
    """Blend tempo chosen at germination (epochs)."""
    curve: BlendCurve | None = None
    """Blend curve chosen at germination."""
    alpha: float = 0.0
    """Current blend weight α ∈ [0, 1]."""
    epochs_in_stage: int = 0
    """Epoch ticks spent in the current stage."""
    contribution: float | None = None
    """Last counterfactual contribution (validation metric with the seed − with α forced to 0); None = not measured."""
    grad_norm: float | None = None
    """Last recorded gradient norm of the seed's parameters; None = not recorded."""
    seed_params: int = 0
    """Parameters of the seed module (0 when empty)."""
    sanity_ok: bool = False
    """The seed's germination probe gave a finite output of the input's shape (gate G1)."""
    embargo_remaining: int = 0
    """Epochs left before an embargoed slot resets."""
    churn: float | None = None
    """Emrakul's audit of a WITHERING seed, last measured: the validation metric with the seed whole − without it,
    on the same examples, after an epoch in which the host trained with the seed dropped per sample with
    probability 1 − α (positive = the host still needs it); None = not measured in this audit yet."""
    churn_loss: float | None = None
    """The same pair in validation loss: the loss without the seed − with it (positive = the host needs it)."""
    epoch: int = 0
    """The slot's clock: epochs ticked since the model was built."""


@dataclass(frozen=True)
class SlotReport(SlotState):
    """A slot's state as controllers, masks, rewards and telemetry see it, with its next gate evaluated now."""

    gate_open: bool = False
    """True when the gate guarding this slot's next ADVANCE passes now."""


@dataclass(frozen=True)
class TrainingSignals:
    """Global training signals of one decision point (a Run fills these)."""

    epoch: int
    max_epochs: int
    train_loss: float
    """Last epoch's mean train loss (the task's chance level before any training)."""
    val_loss: float
    val_metric: float
    """The task's validation metric (higher is better; accuracy for image classification)."""
    host_params: int
    chance_loss: float
    """The task's loss of a uniform prediction: features divide losses by it, so chance level is ≈ 1."""
    active_seed_params: int = 0
    fossilized_params: int = 0
    loss_history: tuple[float, ...] = field(default_factory=tuple)
    metric_history: tuple[float, ...] = field(default_factory=tuple)
    """Validation metric of the untrained model, then after each epoch."""
    budget_spent: float = 0.0
    """Training FLOPs spent / the run's compute budget (its FLOPs budget; in an equal-epoch run, what the bare
    host spends in max_epochs)."""
    excess_flops_ratio: float = 0.0
    """Per-sample training FLOPs of the seeds as they are now (live ones by stage, fossils) / the host's: what
    the next epoch costs beyond the host alone (0 = the host alone)."""
    rent_lambda: float = 0.0
    """The price of capacity in this run (the world's `reward.rent_lambda`): a controller that sees it can serve
    every price with one policy."""
    budget_host_epochs: float = 0.0
    """The run's compute budget in bare-host epochs (`trainer.budget_host_epochs`; in an equal-epoch run, its
    epochs)."""
    compute_bound: bool = False
    """The run ends when its FLOPs budget is spent (an equal-compute run), not after `max_epochs`."""

    @property
    def excess_params_ratio(self) -> float:
        """(P_fossilized + P_active_seeds) / P_host — the rent base (docs/architecture.md, "Parameters")."""
        return (self.fossilized_params + self.active_seed_params) / max(self.host_params, 1)
