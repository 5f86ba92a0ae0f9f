"""Split a core agent (agent.pt of `ppo.network: core`) into its parts, or show what a part file holds.

    python experiments/tamiyo_parts.py runs/core/family/agent.pt             # writes core.pt (+ adapter.pt) beside it
    python experiments/tamiyo_parts.py runs/core/family/agent.pt --out parts/
    python experiments/tamiyo_parts.py runs/core/text/adapter.pt --core runs/core/family/core.pt   # check a pair
    python experiments/tamiyo_parts.py runs/core/family/core.pt --bind shakespeare-cpu --out runs/core/zero-shot
        # the bare core bound to another world's layout, as an agent.pt (zero-shot: no adapter)

core.pt is what `ppo.frozen_core` trains an adapter on; a `network: core` run writes both parts itself, so this is
for agents exported before it did, and for checking which core an adapter belongs to (docs/simic.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from esper.study.cli import fail


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, help="a core agent.pt (split) or an adapter.pt (shown; needs --core)")
    p.add_argument("--out", type=Path, default=None, help="folder for core.pt / adapter.pt (default: beside FILE)")
    p.add_argument("--core", type=Path, default=None, help="core.pt an adapter.pt is checked against")
    p.add_argument("--bind", default=None, metavar="PRESET",
                   help="FILE is a core.pt: write it, bound to this preset's world, as OUT/agent.pt (no adapter)")
    args = p.parse_args()
    from esper.tamiyo.adapter import AdapterError, trainable_share
    from esper.tamiyo.agent_file import AgentFileError, load_agent
    from esper.tamiyo.core import LayoutPolicy, core_hash
    from esper.tamiyo.parts import load_adapter, load_core, save_adapter, save_core

    try:
        if args.bind is not None:
            return _bind(args)
        if args.core is not None:
            core = load_core(args.core)
            adapter = load_adapter(args.file, core)
            print(f"{args.file}: adapter for domain {adapter.domain!r}, rank {adapter.rank}, "
                  f"{trainable_share(adapter, core):.2%} of the core's parameters; fits core {core_hash(core)[:12]}…")
            return
        agent = load_agent(args.file)
    except (AdapterError, AgentFileError) as exc:
        fail(str(exc))
    if not isinstance(agent.net, LayoutPolicy):
        fail(f"{args.file} is a {agent.manifest['network'].get('kind')} agent: only core agents have parts")
    out = args.out or args.file.parent
    out.mkdir(parents=True, exist_ok=True)
    provenance = {"from": args.file.name, **{k: v for k, v in agent.provenance.items() if k != "config"}}
    digest = save_core(out / "core.pt", agent.net.core, provenance)
    print(f"wrote {out / 'core.pt'} (core {digest[:12]}…, hidden {agent.net.hidden})")
    if agent.net.adapter is not None:
        save_adapter(out / "adapter.pt", agent.net.adapter, provenance)
        print(f"wrote {out / 'adapter.pt'} (domain {agent.net.adapter.domain!r})")


def _bind(args) -> None:
    """core.pt → agent.pt of the bare core on the preset's world (evaluate it like any agent)."""
    from esper.leyline.experiment import ConfigError, load_config, preset_path
    from esper.leyline.features import feature_names
    from esper.simic.config import TrainTamiyoConfig
    from esper.tamiyo.agent_file import save_agent
    from esper.tamiyo.core import LayoutPolicy
    from esper.tamiyo.parts import load_core
    from esper.tolaria.builder import action_spec

    try:
        cfg = load_config(preset_path(args.bind), [], model=TrainTamiyoConfig)
    except (ConfigError, ValueError) as exc:
        fail(f"--bind: {exc}")
    core = load_core(args.file)
    cfg.ppo.network, cfg.ppo.hidden = "core", core.hidden
    spec = action_spec(cfg.world)
    out = args.out or args.file.parent
    out.mkdir(parents=True, exist_ok=True)
    save_agent(out / "agent.pt", LayoutPolicy(core, spec), spec, feature_names(spec), cfg.model_dump(mode="json"),
               extra={"bound_from": args.file.name})
    print(f"wrote {out / 'agent.pt'} (the bare core on {cfg.world.name!r}: {len(spec.slots)} slots, "
          f"{len(spec.blueprints)} blueprints)")


if __name__ == "__main__":
    main()
