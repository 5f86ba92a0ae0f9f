"""A comparison's tables and plots: per-arm summaries, differences paired by seed, compute to target, metric vs FLOPs."""

from __future__ import annotations

import statistics
from pathlib import Path

BIG_CONTROL = "capacity"  # the final grown architecture trained from scratch: the target every arm is measured against


def _first_reach(metrics: list[float], flops: list[float], target: float) -> float | None:
    return next((f for m, f in zip(metrics, flops) if m >= target), None)


SPLITS = {"val": ("val_metric", "metric_history", "validation"),
          "eval": ("eval_metric", "eval_metric_history", "external evaluation")}
"""Which final metric and per-epoch history of a curve row a split reads, and its name in tables and plots."""


def compute_to_target(rows: list[dict], arms: list[str], metric: str, split: str = "val") -> tuple[str, float | None]:
    """Markdown table: per arm, the training FLOPs at which each seed first reaches the big control's mean final
    metric on `split` (epoch granularity), how many seeds reach it, and the saving against the big control's own
    spend. `split="eval"` reads the external evaluation set (compare's --eval-data)."""
    final_key, history_key, split_name = SPLITS[split]
    big = [r for r in rows if r["arm"] == BIG_CONTROL]
    if not big:
        return f"(no `{BIG_CONTROL}` arm: no target to measure compute against)", None
    target = statistics.fmean(r[final_key] for r in big)
    big_spend = statistics.fmean(r["train_flops"] for r in big)
    lines = [f"Target: the {BIG_CONTROL} arm's mean final {split_name} {metric}, {target:.4f}; its spend "
             f"{big_spend / 1e12:.3g} TFLOPs.", "",
             f"| arm | seeds reaching the target | TFLOPs to target (mean ± sample std) | saving vs the big control | final "
             f"{split_name} {metric} | TFLOPs spent |", "|---|---:|---:|---:|---:|---:|"]
    for arm in arms:
        rs = [r for r in rows if r["arm"] == arm]
        hits = [h for h in (_first_reach(r[history_key], r["flops_history"], target) for r in rs) if h is not None]
        if hits:
            mean, std = statistics.fmean(hits), statistics.stdev(hits) if len(hits) > 1 else 0.0
            reach, saving = f"{mean / 1e12:.3g} ± {std / 1e12:.2g}", f"{1 - mean / big_spend:+.1%}"
        else:
            reach, saving = "not reached", "—"
        final = statistics.fmean(r[final_key] for r in rs)
        spent = statistics.fmean(r["train_flops"] for r in rs)
        lines.append(f"| {arm} | {len(hits)}/{len(rs)} | {reach} | {saving} | {final:.4f} | {spent / 1e12:.3g} |")
    return "\n".join(lines), target


def paired_table(rows: list[dict], arms: list[str], metric: str, references: list[str], split: str = "val") -> str:
    """Markdown table: per arm, the final metric on `split` (mean ± sample std over seeds) and, against each reference
    arm, the difference arm − reference paired by seed (mean [SE]; > 0 is better: metrics are higher-is-better)
    with the number of seeds on which the arm is ahead. Every arm must have run the reference's seeds."""
    final_key, _, split_name = SPLITS[split]
    by_arm = {arm: {r["seed"]: r[final_key] for r in rows if r["arm"] == arm} for arm in arms}
    missing = [ref for ref in references if ref not in by_arm]
    if missing:
        raise ValueError(f"no arm {missing} to pair with (arms: {arms})")

    def mean_std(values: list[float]) -> str:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.fmean(values):.4f} ± {std:.4f}"

    def mean_se(diffs: list[float]) -> str:
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0
        return f"{statistics.fmean(diffs):+.4f} [{se:.4f}]"

    head = f"| arm | seeds | final {split_name} {metric} |" + "".join(f" − {ref} (paired) |" for ref in references)
    lines = [f"Final metric: mean ± sample std over seeds. Differences paired by seed: mean [standard error]; > 0 is "
             f"better ({metric} is higher-is-better); k/n: seeds on which the arm is ahead.", "", head,
             "|---|---:|---:|" + "---:|" * len(references)]
    for arm in arms:
        values = by_arm[arm]
        cells = []
        for ref in references:
            if set(by_arm[ref]) != set(values):
                raise ValueError(f"arms {arm!r} and {ref!r} ran different seeds: {sorted(values)} vs {sorted(by_arm[ref])}")
            diffs = [values[s] - by_arm[ref][s] for s in sorted(values)]
            cells.append("—" if arm == ref else f"{mean_se(diffs)} ({sum(d > 0 for d in diffs)}/{len(diffs)})")
        lines.append(f"| {arm} | {len(values)} | {mean_std(list(values.values()))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(rows: list[dict], arms: list[str], metric: str, target: float | None, path: Path,
                split: str = "val") -> None:
    """The metric on `split` against cumulative training FLOPs: mean over seeds, ± std band (seeds on a common grid)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    _, history_key, split_name = SPLITS[split]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm in arms:
        rs = [r for r in rows if r["arm"] == arm and r["flops_history"]]
        if not rs:
            continue
        grid = np.linspace(max(r["flops_history"][0] for r in rs), min(r["flops_history"][-1] for r in rs), 50)
        curves = np.stack([np.interp(grid, r["flops_history"], r[history_key]) for r in rs])
        mean, std = curves.mean(0), curves.std(0, ddof=1) if len(rs) > 1 else np.zeros_like(grid)
        ax.plot(grid / 1e12, mean, label=f"{arm} ({len(rs)} seeds)")
        ax.fill_between(grid / 1e12, mean - std, mean + std, alpha=0.2)
    if target is not None:
        ax.axhline(target, color="black", linestyle="--", linewidth=0.8, label=f"{BIG_CONTROL} final (target)")
    ax.set_xlabel("cumulative training TFLOPs")
    ax.set_ylabel(f"{split_name} {metric}")
    ax.set_title(f"{metric} vs training compute (mean ± sample std over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summarise_arms(rows: list[dict], arms: list[str], has_eval: bool) -> list[dict]:
    out = []
    for arm in arms:
        rs = [r for r in rows if r["arm"] == arm]
        stat = lambda k: (statistics.fmean(r[k] for r in rs), statistics.stdev([r[k] for r in rs]) if len(rs) > 1 else 0.0)
        s = {"arm": arm, "n": len(rs), "val_metric": stat("val_metric"), "params": stat("params_total"),
             "train_flops": stat("train_flops"), "seconds": stat("wall_seconds")}
        if has_eval:
            s["eval_metric"] = stat("eval_metric")
        out.append(s)
    return out


def arms_table(summary: list[dict], has_eval: bool, metric: str) -> str:
    pct = metric == "accuracy"  # accuracy is a fraction: shown in %
    f = (lambda v: f"{v:.2%}") if pct else (lambda v: f"{v:.4f}")
    head = (f"| arm | seeds | val {metric} (mean ± sample std) |" + (f" eval {metric} |" if has_eval else "")
            + " final params | training TFLOPs | wall-clock s |")
    lines = [head, "|---|---:|---:|" + ("---:|" if has_eval else "") + "---:|---:|---:|"]
    for s in summary:
        ev = f" {f(s['eval_metric'][0])} ± {f(s['eval_metric'][1])} |" if has_eval else ""
        lines.append(f"| {s['arm']} | {s['n']} | {f(s['val_metric'][0])} ± {f(s['val_metric'][1])} |{ev} "
                     f"{s['params'][0]:,.0f} | {s['train_flops'][0] / 1e12:.3g} | {s['seconds'][0]:.0f} ± {s['seconds'][1]:.0f} |")
    return "\n".join(lines)


def samples_markdown(curves: list[dict], arms: list[str]) -> str:
    """Generated text of each arm's best run (tasks that can generate), for reading rather than a loss number."""
    out = []
    for arm in arms:
        rs = [c for c in curves if c["arm"] == arm and c.get("sample")]
        if rs:
            best = max(rs, key=lambda c: c["val_metric"])
            out.append(f"### {arm} (seed {best['seed']}, val {best['val_metric']:.4f})\n\n```\n{best['sample']}\n```\n")
    return "\n## Samples (300 characters, temperature 0.8)\n\n" + "\n".join(out) if out else ""


def plot_params(rows: list[dict], arms: list[str], metric: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in arms:
        rs = [r for r in rows if r["arm"] == arm]
        ax.scatter([r["params_total"] for r in rs], [r["val_metric"] for r in rs], label=arm, alpha=0.8)
    ax.set_xlabel("final parameters")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"{metric} vs parameters (one point per seed)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
