"""Grow, then prune: each `ARM+emrakul` arm of a comparison against the arm that only grows, paired by seed —
the metric, the parameters kept, the rent-adjusted metric (metric − λ·excess parameter ratio) and what the audits
cost (their share of the training FLOPs)."""

from __future__ import annotations

import statistics

SUFFIX = "+emrakul"


def _mean_se(diffs: list[float]) -> tuple[float, float]:
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    return statistics.fmean(diffs), se


def prune_pairs(rows: list[dict], arms: list[str], rent_lambda: float) -> list[dict]:
    """One dict per `ARM+emrakul` arm whose ARM also ran: paired statistics over their common seeds."""
    out = []
    for arm in arms:
        base = arm.removesuffix(SUFFIX)
        if not arm.endswith(SUFFIX) or base not in arms:
            continue
        mine = {r["seed"]: r for r in rows if r["arm"] == arm}
        theirs = {r["seed"]: r for r in rows if r["arm"] == base}
        seeds = sorted(set(mine) & set(theirs))
        if not seeds:
            continue
        adjusted = lambda r: r["val_metric"] - rent_lambda * r["excess_ratio"]
        metric = _mean_se([mine[s]["val_metric"] - theirs[s]["val_metric"] for s in seeds])
        adj = _mean_se([adjusted(mine[s]) - adjusted(theirs[s]) for s in seeds])
        fewer = statistics.fmean(1 - mine[s]["params_total"] / theirs[s]["params_total"] for s in seeds)
        audit_share = max(mine[s].get("audit_flops", 0.0) / mine[s]["train_flops"] for s in seeds)
        out.append({"arm": arm, "base": base, "seeds": len(seeds), "d_metric": metric, "d_adjusted": adj,
                    "fewer_params": fewer, "audit_share": audit_share,
                    "culled": sum(mine[s].get("culled_fossils", 0) for s in seeds),
                    "revived": sum(mine[s].get("revived_fossils", 0) for s in seeds)})
    return out


def prune_table(rows: list[dict], arms: list[str], rent_lambda: float) -> str:
    """Markdown table of `prune_pairs` ("" when the comparison has no pair)."""
    pairs = prune_pairs(rows, arms, rent_lambda)
    if not pairs:
        return ""
    lines = [f"Paired by seed: mean [standard error] of ARM+emrakul − ARM. Rent-adjusted = val metric − "
             f"{rent_lambda:g} × excess parameter ratio. Audit FLOPs: the largest share of a run's training FLOPs.",
             "", "| arm | vs | seeds | Δ val metric | fewer parameters | Δ rent-adjusted | Δ adj / SE | audit FLOPs "
             "| fossils culled / revived |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for p in pairs:
        (dm, sm), (da, sa) = p["d_metric"], p["d_adjusted"]
        lines.append(f"| {p['arm']} | {p['base']} | {p['seeds']} | {dm:+.4f} [{sm:.4f}] | {p['fewer_params']:.1%} | "
                     f"{da:+.4f} [{sa:.4f}] | {da / sa if sa else float('nan'):.1f} | {p['audit_share']:.2%} | "
                     f"{p['culled']} / {p['revived']} |")
    return "\n".join(lines)
