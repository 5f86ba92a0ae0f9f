"""Does a family-trained Tamiyo earn its keep? The acceptance checks, read from evaluate_tamiyo.py --worlds outputs.

    python experiments/evaluate_tamiyo.py --preset family --episodes 12 --plan-space 2 --out runs/eval/family-plans
    python experiments/evaluate_tamiyo.py --agent runs/ppo/family-s0/agent.pt --worlds experiments/worlds/heldout_family.yaml \
        --episodes 20 --controllers ppo wait random heuristic plan:<best> --out runs/eval/family-s0
    python experiments/family_verdict.py --plans runs/eval/family-plans/evaluation.json \
        runs/eval/family-s0/evaluation.json runs/eval/family-s1/evaluation.json

For each evaluation (one per PPO training seed), on the held-out worlds pooled: PPO greedy beats the best single
fixed plan (the plan search's winner on the *training* family), the heuristic and WAIT on return by more than
2 paired standard errors; across worlds, Spearman ρ(rent λ, final excess params) ≤ −0.8; its germinations differ
between at least two worlds. Worlds on real data (a .parquet source) are reported apart. Writes verdict.md
beside each evaluation and prints it. Exit status: 0 every check passed, 3 a check failed (a result, not an
error), 1 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("evaluations", nargs="+", type=Path, help="evaluation.json of evaluate_tamiyo.py --worlds, one per seed")
    p.add_argument("--plans", type=Path, required=True, help="evaluation.json of the plan search on the training family")
    args = p.parse_args()
    try:
        search = json.loads(args.plans.read_text())["plan_search"]
        best = search[0]["controller"]
        print(f"best single fixed plan on the training family: {best} (return {search[0]['return']:+.3f})\n")
        all_ok = True
        for path in args.evaluations:
            text, ok = verdict(json.loads(path.read_text()), best)
            (path.parent / "verdict.md").write_text(f"# {path}\n\nBest fixed plan: {best}\n\n" + text)
            print(f"## {path}\n\n{text}")
            all_ok &= ok
    except (OSError, KeyError, IndexError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    sys.exit(0 if all_ok else FAILED)


if __name__ == "__main__":
    main()
