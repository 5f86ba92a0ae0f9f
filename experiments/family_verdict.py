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

from esper.study.cli import fail
from esper.study.verdict import FAILED, verdict


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
        fail(str(exc))
    sys.exit(0 if all_ok else FAILED)


if __name__ == "__main__":
    main()
