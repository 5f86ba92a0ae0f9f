"""Split a core agent (agent.pt of `ppo.network: core`) into its parts, or show what a part file holds.

    python experiments/tamiyo_parts.py runs/core/family/agent.pt             # writes core.pt (+ adapter.pt) beside it
    python experiments/tamiyo_parts.py runs/core/family/agent.pt --out parts/
    python experiments/tamiyo_parts.py runs/core/text/adapter.pt --core runs/core/family/core.pt   # check a pair

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
    args = p.parse_args()
    from esper.tamiyo.adapter import AdapterError, trainable_share
    from esper.tamiyo.agent_file import AgentFileError, load_agent
    from esper.tamiyo.core import LayoutPolicy, core_hash
    from esper.tamiyo.parts import load_adapter, load_core, save_adapter, save_core

    try:
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


if __name__ == "__main__":
    main()
