"""Re-attaching a domain's adapter reproduces its agent exactly? The vision agent plays held-out worlds; its core
(core.pt) then serves another domain's adapter, and gets the vision adapter (adapter.pt) back; the same episodes
are played again and every decision compared (esper/study/reattach.py).

    python experiments/core_reattach.py --vision-agent runs/core/vision/agent.pt --core runs/core/family/core.pt \
        --adapter runs/core/vision/adapter.pt --other-agent runs/core/text/agent.pt \
        --worlds experiments/worlds/heldout_family.yaml --episodes 2 --out docs/data/core/reattach.json
"""

from __future__ import annotations

import json
from pathlib import Path

from esper.study.cli import checked, script_parser, show_progress


def main() -> None:
    p = script_parser(__doc__, preset=None, out="runs/core/reattach.json", out_file=True)
    p.add_argument("--vision-agent", type=Path, required=True, help="agent.pt: the core with the vision adapter")
    p.add_argument("--core", type=Path, required=True, help="core.pt the adapters were trained on")
    p.add_argument("--adapter", type=Path, required=True, help="the vision adapter.pt")
    p.add_argument("--other-agent", type=Path, required=True, help="agent.pt of another domain on the same core")
    p.add_argument("--worlds", type=Path, required=True, help="YAML of named held-out worlds (evaluate_tamiyo's)")
    p.add_argument("--episodes", type=int, default=2, help="episodes per world (seeds 90000, 90001, …)")
    args = p.parse_args()
    from esper.leyline.experiment import ConfigError
    from esper.simic.config import TrainTamiyoConfig
    from esper.study.evaluate import named_worlds
    from esper.study.reattach import reattach_check
    from esper.tamiyo.agent_file import load_agent

    show_progress()
    out = args.out or Path("runs/core/reattach.json")
    config = lambda: TrainTamiyoConfig.model_validate(load_agent(args.vision_agent).provenance["config"]).world
    base = checked(config, ValueError, KeyError)
    worlds = checked(lambda: named_worlds(args.worlds, base), ConfigError)
    result = checked(lambda: reattach_check(args.vision_agent, args.core, args.adapter, args.other_agent, worlds,
                                            [90_000 + i for i in range(args.episodes)]), ValueError)
    rows = [r for world in result.values() for r in world]
    summary = {"episodes": len(rows), "identical_episodes": sum(r["identical_episode"] for r in rows),
               "decisions": sum(r["decisions"] for r in rows),
               "identical_decisions": sum(r["identical_decisions"] for r in rows),
               "identical_logits": sum(r["identical_logits"] for r in rows),
               "non_wait_decisions": sum(r["non_wait_decisions"] for r in rows), "worlds": result,
               "command": "python experiments/core_reattach.py " + " ".join(
                   f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"{summary['identical_decisions']}/{summary['decisions']} decisions ({summary['non_wait_decisions']} not WAIT), "
          f"{summary['identical_logits']} logit vectors and {summary['identical_episodes']}/"
          f"{summary['episodes']} episodes identical over {len(result)} worlds; wrote {out}")


if __name__ == "__main__":
    main()
