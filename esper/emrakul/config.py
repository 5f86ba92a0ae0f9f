"""The world's `emrakul:` section: whether fossils are audited, and the heuristic reaper's thresholds."""

from __future__ import annotations

from pydantic import Field

from esper.leyline.base import EsperModel


class EmrakulConfig(EsperModel):
    """Emrakul audits a fossil by withering it (its α falls to 0 over `kasmina.wither_tempo` epochs while the host
    trains on, the seed dropped per sample with probability 1 − α), measures the churn — the validation metric
    with the seed whole − without it, on the same examples — and culls it when that is not worth its rent, else
    revives it. Off by default: worlds without this section behave as before."""

    enabled: bool = False
    """Run Emrakul after Tamiyo at every decision point."""
    stable_epochs: int = Field(3, ge=0)
    """A fossil is audited once it has been FOSSILIZED this many epochs (a revived one: `reaudit_after`)."""
    reaudit_after: int | None = Field(None, ge=0)
    """Epochs a revived fossil is left alone before its next audit (None = never audited again in the run)."""
    concurrent: int = Field(1, ge=1)
    """Audits in flight at once (1 = one fossil at a time)."""
    revive_above: float = Field(0.02, ge=0)
    """Stop an audit early and revive when the churn of the last two measurements exceeds this on average (the
    metric, e.g. 0.02 = 2 accuracy points)."""
    rent_weight: float | None = Field(None, ge=0)
    """λ of the verdict: cull when churn ≤ λ · seed parameters / host parameters + `cull_margin`. None = the
    run's price of capacity (`reward.rent_lambda`, what Tamiyo is told)."""
    cull_margin: float = 0.0
    """Added to the rent side of the verdict (> 0 culls more readily, < 0 less)."""
    min_budget_left: float = Field(0.0, ge=0, le=1)
    """Start no audit once this fraction of the run's compute budget or fewer of its decisions remain (an audit
    that cannot finish only costs); besides, one is never started unless its whole length still fits."""
