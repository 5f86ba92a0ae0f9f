"""The report of a Tune sweep: trials table (CSV + Markdown), Pareto plot, objective vs each swept field,
the best trial's agent.pt, and what rent did to Tamiyo's behaviour."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from esper.study.episodes import format_metric
from esper.simic.tune.config import SweepConfig
from esper.simic.tune.trial import EVAL_PREFIX, OBJECTIVE

RENT = "world.reward.rent_lambda"
COLUMNS = {  # report column → Tune result column
    "objective": OBJECTIVE, "eval_metric": EVAL_PREFIX + "final_metric", "eval_metric_se": EVAL_PREFIX + "final_metric_se",
    "excess_ratio": EVAL_PREFIX + "final_excess_ratio", "germinated": EVAL_PREFIX + "germinated",
    "fossilized": EVAL_PREFIX + "fossilized", "culled": EVAL_PREFIX + "culled", "eval_return": EVAL_PREFIX + "episode_return",
    "train_return": "train/return_mean", "iterations": "training_iteration",
}


def trials_table(grid, sweep: SweepConfig):
    """One row per trial: its swept values, evaluation numbers and objective (pandas DataFrame)."""
    import pandas as pd

    rows = []
    for result in grid:
        m, cfg = result.metrics or {}, (result.config or {}).get("overrides", {})
        row = {"trial": (result.path or "").rstrip("/").split("/")[-1][:40], "status": "error" if result.error else "done"}
        row.update({k: cfg.get(k) for k in sweep.search})
        row.update({name: m.get(col, np.nan) for name, col in COLUMNS.items()})
        row["checkpoint"] = result.checkpoint.path if result.checkpoint else None
        rows.append(row)
    return pd.DataFrame(rows).sort_values("objective", ascending=False, na_position="last")


def _markdown(df, sweep: SweepConfig, metric: str) -> str:
    keys = list(sweep.search)
    head = "| " + " | ".join(keys + [f"eval {metric}", "excess params", "germinated", "fossilized", "eval return", "objective"]) + " |"
    lines = [head, "|" + "---:|" * (len(keys) + 6)]
    for idx, r in df.iterrows():
        vals = [f"{r[k]:.4g}" for k in keys]
        lines.append("| " + " | ".join(vals + [f"{format_metric(r.eval_metric, metric)} ± {format_metric(r.eval_metric_se, metric)}", f"{r.excess_ratio:.2f}",
                                               f"{r.germinated:.2f}", f"{r.fossilized:.2f}", f"{r.eval_return:+.3f}",
                                               f"**{r.objective:.4f}**" if idx == df.index[0] else f"{r.objective:.4f}"]) + " |")
    return "\n".join(lines)


def _rent_effect(df, metric: str) -> str:
    if RENT not in df:
        return ""
    cols = ["eval_metric", "excess_ratio", "germinated", "fossilized", "objective"]
    by_rent = df.groupby(RENT)[cols]
    g, sd, n = by_rent.mean().sort_index(), by_rent.std(ddof=1).sort_index().fillna(0.0), by_rent.size().sort_index()
    pm = lambda lam, col, fmt: f"{format(g.loc[lam, col], fmt)} ± {format(sd.loc[lam, col], fmt)}"
    pm_metric = lambda lam: f"{format_metric(g.loc[lam, 'eval_metric'], metric)} ± {format_metric(sd.loc[lam, 'eval_metric'], metric)}"
    lines = ["", "Mean ± std over the trials of each rent λ:", "",
             f"| rent λ | trials | eval {metric} | excess params | germinated | fossilized | objective |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {lam:g} | {n[lam]} | {pm_metric(lam)} | {pm(lam, 'excess_ratio', '.2f')} | "
              f"{pm(lam, 'germinated', '.2f')} | {pm(lam, 'fossilized', '.2f')} | {pm(lam, 'objective', '.4f')} |"
              for lam in g.index]
    tied = [f"{lam:g}" for lam in g.index[np.isclose(g["objective"], g["objective"].max())]]
    best = f"**{tied[0]}**" if len(tied) == 1 else "a tie between " + ", ".join(f"**{t}**" for t in tied)
    lo, hi = g.index.min(), g.index.max()
    lines += ["", f"Best rent λ by the objective: {best}. From λ = {lo:g} to λ = {hi:g}, germinations per episode went "
                  f"{g.loc[lo, 'germinated']:.2f} → {g.loc[hi, 'germinated']:.2f} and the final parameter ratio "
                  f"{g.loc[lo, 'excess_ratio']:.2f} → {g.loc[hi, 'excess_ratio']:.2f}."]
    return "\n".join(lines)


def _plots(df, sweep: SweepConfig, out: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colour_key = RENT if RENT in sweep.search else next(iter(sweep.search))
    done = df.dropna(subset=["objective"])
    fig, ax = plt.subplots(figsize=(6, 4.5))
    sc = ax.scatter(done.excess_ratio, done.eval_metric, c=done[colour_key].astype(float), cmap="viridis", s=60)
    front = done.sort_values("excess_ratio")
    front = front[front.eval_metric >= front.eval_metric.cummax()]  # nobody better with fewer params
    ax.plot(front.excess_ratio, front.eval_metric, "k--", lw=1, label="Pareto front")
    ax.set(xlabel="final excess parameter ratio (seeds / host)", ylabel=f"evaluation {metric}", title=f"{metric} vs parameters")
    fig.colorbar(sc, label=colour_key)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=120)
    plt.close(fig)
    keys = list(sweep.search)
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        ax.scatter(done[key].astype(float), done.objective)
        ax.set(xlabel=key.split(".")[-1], ylabel="objective")
    fig.tight_layout()
    fig.savefig(out / "objective_vs_params.png", dpi=120)
    plt.close(fig)


def _training_curves(grid, sweep: SweepConfig, out: Path, metric: str) -> bool:
    """training.png: what each trial's sampled policy did over its iterations (last-50-episode means), one line
    per trial coloured by rent λ (or the first swept field) — how fast the reward moved the behaviour."""
    import matplotlib.pyplot as plt

    key = RENT if RENT in sweep.search else next(iter(sweep.search))
    curves = [(float(r.config["overrides"][key]), r.metrics_dataframe) for r in grid
              if r.metrics_dataframe is not None and len(r.metrics_dataframe) and r.config]
    if not curves:
        return False
    lo, hi = min(v for v, _ in curves), max(v for v, _ in curves)
    colour = lambda v: plt.cm.viridis(0.0 if hi == lo else (v - lo) / (hi - lo))
    panels = [("train/excess_param_ratio", "excess parameter ratio"), ("train/final_metric", f"final {metric}"),
              ("train/germinated", "seeds germinated / episode"), ("train/return_mean", "return (its own λ)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.5))
    for ax, (col, label) in zip(axes, panels):
        for value, df in sorted(curves, key=lambda c: c[0]):
            if col in df:
                ax.plot(df["training_iteration"], df[col], color=colour(value), marker=".", label=f"{value:g}")
        ax.set(xlabel="PPO iteration", ylabel=label)
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.legend(unique.values(), unique.keys(), title=key.split(".")[-1], loc="center right")
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    fig.savefig(out / "training.png", dpi=110)
    plt.close(fig)
    return True


def write_report(grid, sweep: SweepConfig, out: Path, command: str, metric: str = "accuracy") -> str:
    """Write trials.csv, report.md, the plots and best_agent.pt into `out`; return the Markdown. `metric`: the
    base world's task metric (accuracy is shown in %, any other to 4 decimals)."""
    out.mkdir(parents=True, exist_ok=True)
    df = trials_table(grid, sweep)
    df.to_csv(out / "trials.csv", index=False)
    errors = int((df.status == "error").sum())
    lines = [f"# Sweep `{out.name}`", "", f"`{command}`", "",
             f"{len(df)} trials ({errors} errored), {sweep.iterations} PPO iterations each, base `{sweep.base}`, scheduler "
             f"{sweep.scheduler}; objective = {_objective_text(sweep, metric)} over "
             f"{sweep.eval_episodes} fixed evaluation episodes.", "", _markdown(df, sweep, metric), _rent_effect(df, metric)]
    best = df.iloc[0] if len(df) and not np.isnan(df.iloc[0].objective) else None
    if best is not None and best.checkpoint and (Path(best.checkpoint) / "agent.pt").is_file():
        shutil.copy(Path(best.checkpoint) / "agent.pt", out / "best_agent.pt")
        lines += ["", f"Best trial: `{best.trial}` → `{out / 'best_agent.pt'}`."]
    if best is not None:
        _plots(df, sweep, out, metric)
        lines += ["", "![Pareto](pareto.png)", "", "![objective vs swept fields](objective_vs_params.png)"]
        if _training_curves(grid, sweep, out, metric):
            lines += ["", "Training (sampled policy, means over the last 50 episodes):", "", "![training](training.png)"]
    md = "\n".join(lines) + "\n"
    (out / "report.md").write_text(md)
    return md


def _objective_text(sweep: SweepConfig, metric: str) -> str:
    if sweep.objective_rent is None:
        return "mean eval return (each episode at its own world's rent)"
    return f"eval {metric} − {sweep.objective_rent:g} × excess ratio"
