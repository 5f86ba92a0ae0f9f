"""The world-family study end to end, resumable: train Tamiyo on the family (≥ 2 seeds), search the best fixed plan
on the training family, play every controller on the held-out worlds, and judge (family_verdict.py).

    python experiments/family_study.py                       # everything (hours on 2 CPU cores)
    python experiments/family_study.py --stage plans         # one stage: train | plans | heldout | verdict

Every stage skips what is already done and continues what was interrupted, so running the same command again
after a crash or a session's end picks up where it stopped: a PPO run with a checkpoint but no summary.json
resumes (`ppo_multislot.py --resume`); an evaluation with its evaluation.json is not redone, one with an
episodes.jsonl continues (`evaluate_tamiyo.py --resume`: finished world × controller sets are not replayed). Each stage runs
the experiment scripts as subprocesses, with their own progress output; the commands are printed first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
STAGES = ("train", "plans", "heldout", "verdict")  # in order; each is the function of that name below


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="family", help="the family preset PPO trains on (default %(default)s)")
    p.add_argument("--worlds", type=Path, default=HERE / "worlds" / "heldout_family.yaml", help="held-out worlds file")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="PPO training seeds (≥ 2 for a claim)")
    p.add_argument("--plan-episodes", type=int, default=12, help="training-family episodes per plan in the search")
    p.add_argument("--plan-space", type=int, default=2, help="plans of up to this many seeds are searched")
    p.add_argument("--episodes", type=int, default=20, help="episodes per held-out world and controller")
    p.add_argument("--out", type=Path, default=Path("runs/family"), help="study folder (default %(default)s)")
    p.add_argument("--stage", choices=STAGES, default=None, help="run only this stage (default: all, in order)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override passed to the PPO runs (e.g. ppo.iterations=30)")
    args = p.parse_args()
    if len(args.seeds) < 2:
        print("warning: fewer than 2 PPO seeds — the acceptance asks for each of ≥ 2", file=sys.stderr)
    return args


def _run(cmd: list[str], ok: tuple[int, ...] = (0,)) -> int:
    print("\n$ " + " ".join(cmd), flush=True)
    code = subprocess.run(cmd).returncode
    if code not in ok:
        sys.exit(f"error: stage command failed (exit {code}): {' '.join(cmd)}")  # its own error is printed above
    return code


def train(args) -> None:
    for seed in args.seeds:
        run = args.out / f"ppo-s{seed}"
        if (run / "summary.json").is_file():
            print(f"train seed {seed}: done ({run})")
            continue
        resume = ["--out", str(run), *(["--resume"] if (run / "checkpoint").is_dir() else [])]
        sets = [x for kv in args.overrides for x in ("--set", kv)]
        _run([sys.executable, str(HERE / "ppo_multislot.py"), "--preset", args.preset, "--seed", str(seed),
              "--no-ray-dashboard", *sets, *resume])


def plans(args) -> None:
    folder = args.out / "plans"
    if (folder / "evaluation.json").is_file():
        print(f"plan search: done ({folder})")
        return
    _run([sys.executable, str(HERE / "evaluate_tamiyo.py"), "--preset", args.preset, "--episodes", str(args.plan_episodes),
          "--plan-space", str(args.plan_space), "--controllers", "wait", "heuristic", "--out", str(folder), *_resume(folder)])


def _resume(folder: Path) -> list[str]:
    """--resume for an evaluation a crash or a session's end interrupted."""
    return ["--resume"] if (folder / "episodes.jsonl").is_file() else []


def _best_plan(args) -> str:
    path = args.out / "plans" / "evaluation.json"
    if not path.is_file():
        sys.exit(f"error: no plan search yet ({path}): run --stage plans first")
    return json.loads(path.read_text())["plan_search"][0]["controller"]


def heldout(args) -> None:
    best = _best_plan(args)
    for seed in args.seeds:
        agent, folder = args.out / f"ppo-s{seed}" / "agent.pt", args.out / f"heldout-s{seed}"
        if (folder / "evaluation.json").is_file():
            print(f"held-out seed {seed}: done ({folder})")
            continue
        if not agent.is_file():
            sys.exit(f"error: {agent} not found: run --stage train first")
        _run([sys.executable, str(HERE / "evaluate_tamiyo.py"), "--agent", str(agent), "--worlds", str(args.worlds),
              "--episodes", str(args.episodes), "--controllers", "ppo", "wait", "random", "heuristic", best,
              "--out", str(folder), *_resume(folder)])


def verdict(args) -> None:
    from esper.study.verdict import FAILED

    code = _run([sys.executable, str(HERE / "family_verdict.py"), "--plans", str(args.out / "plans" / "evaluation.json"),
                 *[str(args.out / f"heldout-s{s}" / "evaluation.json") for s in args.seeds]], ok=(0, FAILED))
    print("\nverdict: " + ("PASS" if code == 0 else "FAIL") + f" (verdict.md in each {args.out}/heldout-s*/)")


def _check(args) -> None:
    """The family, its PPO overrides and the held-out worlds, checked whole before the first stage starts."""
    from esper.leyline.experiment import load_config, preset_path
    from esper.simic.config import TrainTamiyoConfig
    from esper.study.cli import check_world
    from esper.study.evaluate import named_worlds

    cfg = load_config(preset_path(args.preset), args.overrides, model=TrainTamiyoConfig)
    check_world(cfg.world)
    named_worlds(args.worlds, cfg.world)


def main() -> None:
    from esper.study.cli import checked

    args = _parse()
    checked(lambda: _check(args))
    args.out.mkdir(parents=True, exist_ok=True)
    run = {"train": train, "plans": plans, "heldout": heldout, "verdict": verdict}
    for stage in [args.stage] if args.stage else STAGES:
        print(f"\n=== {stage}", flush=True)
        run[stage](args)


if __name__ == "__main__":
    main()
