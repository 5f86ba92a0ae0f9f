"""Does a family-trained Tamiyo earn its keep? The verdict read from held-out evaluations (esper.study.evaluate).

For each evaluation (one per PPO training seed), on the held-out worlds pooled: PPO greedy beats the best single
fixed plan (the plan search's winner on the *training* family), the heuristic and WAIT on return by more than
2 paired standard errors; across worlds, Spearman ρ(rent λ, final excess params) ≤ −0.8; its germinations differ
between at least two worlds. Worlds on real data (a .parquet source) are reported apart.
"""

from __future__ import annotations

import json

RHO_MAX = -0.8
FAILED = 3  # exit status when a check fails


def _paired_line(name: str, d: dict) -> tuple[str, bool]:
    ok = d["mean"] > 2 * d["se"]
    return f"| {name} | {d['mean']:+.3f} [{d['se']:.3f}] | {'yes' if ok else 'no'} |", ok


def verdict(report: dict, best_plan: str) -> tuple[str, bool]:
    """Markdown verdict of one held-out evaluation and whether every check passed."""
    if "pooled" not in report:
        raise ValueError("not an evaluate_tamiyo.py --worlds output (no pooled results)")
    pooled = report["pooled"]["paired"]
    lines = [f"Held-out worlds: {', '.join(report['worlds'])}; {len(report['seeds'])} episodes each.", "",
             "| PPO − baseline (pooled return) | mean [SE] | > 2 SE |", "|---|---:|---:|"]
    passed = True
    for base in (best_plan, "heuristic", "wait"):
        key = f"ppo - {base}"
        if key not in pooled:
            raise ValueError(f"the evaluation has no '{key}' pair: play ppo and {base} on the same seeds")
        line, ok = _paired_line(key, pooled[key]["episode_return"])
        lines.append(line)
        passed &= ok
    response = report["rent_response"]["ppo"]
    rho = response["spearman_rent_vs_ratio"]
    rho_ok = rho is not None and rho <= RHO_MAX
    choices = {json.dumps(sorted(w["germinations"])) for w in response["worlds"]}
    lines += ["", f"- Spearman ρ(λ, final excess params) = {'—' if rho is None else f'{rho:+.2f}'} "
                  f"(≤ {RHO_MAX}: {'yes' if rho_ok else 'no'})",
              f"- distinct germination choices across worlds: {len(choices)} (≥ 2: {'yes' if len(choices) >= 2 else 'no'})"]
    passed &= rho_ok and len(choices) >= 2
    real = [w for w, e in report["worlds"].items() if str(e["world"]["data"].get("source", "")).endswith(".parquet")]
    if real:
        lines += ["", "Real-data worlds, apart (PPO − best plan, return):", ""]
        for w in real:
            d = report["worlds"][w]["paired"].get(f"ppo - {best_plan}", {}).get("episode_return")
            lines.append(f"- {w}: " + ("not played" if d is None else f"{d['mean']:+.3f} [{d['se']:.3f}]"
                                       + (" — ahead by > 2 SE" if d["mean"] > 2 * d["se"] else " — not ahead")))
    lines += ["", f"**Verdict: {'PASS' if passed else 'FAIL'}**"]
    return "\n".join(lines) + "\n", passed
