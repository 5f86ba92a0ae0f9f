"""Benchmark the served Tamiyo on loopback: latency, concurrent throughput, batch endpoint, in-cluster handle.

    python experiments/bench_serve.py --agent runs/ppo/<run>/agent.pt          # both ingresses, ~3 min
    python experiments/bench_serve.py --ingress proxy --requests 500          # one ingress
    python experiments/bench_serve.py --ingress haproxy --domains             # + one core serving two domains

Each ingress runs in its own child process with its own local Ray cluster (the ingress is fixed when the
cluster starts), which it stops before exiting. Traffic goes only to 127.0.0.1 servers this script started,
and every phase is bounded in requests. Without --agent a policy with random weights and the default world's
layout is served (latency does not depend on the weights). Writes docs/data/bench_serve.json (--out).
The logic is esper/study/bench_serve.py.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from esper.study.cli import checked, script_parser, show_progress


def main() -> None:
    p = script_parser(__doc__, preset=None, out="docs/data/bench_serve.json", out_file=True)
    p.add_argument("--agent", type=Path, default=None, help="agent.pt to serve (default: random weights)")
    p.add_argument("--ingress", choices=["proxy", "haproxy", "both"], default="both")
    p.add_argument("--requests", type=int, default=1000, help="sequential requests measured (after 50 warm-up)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients in the throughput phase")
    p.add_argument("--batch-rows", type=int, default=256, help="observations per batch-endpoint request")
    p.add_argument("--domains", action="store_true",
                   help="also serve two domains (one core, an adapter each) from one deployment, measured beside the agent")
    args = p.parse_args()
    if min(args.requests, args.clients, args.batch_rows) < 1:
        p.error("--requests, --clients and --batch-rows must be ≥ 1")
    from esper.serve.policy import ServedPolicy
    from esper.study.bench_serve import Load, random_agent, run_ingress, table

    if args.agent is not None:  # a bad file fails here, in a second, before any cluster starts
        checked(lambda: ServedPolicy(args.agent).canary(), ValueError, RuntimeError)
    show_progress()
    with tempfile.TemporaryDirectory() as tmp:
        agent = args.agent or Path(tmp) / "agent.pt"
        if args.agent is None:
            random_agent(agent)
        modes = ["proxy", "haproxy"] if args.ingress == "both" else [args.ingress]
        load = Load(args.requests, args.clients, args.batch_rows, args.domains)
        rows = [checked(lambda: run_ingress(agent, mode, load), RuntimeError) for mode in modes]
    from esper.provenance import code_version

    out = args.out or Path("docs/data/bench_serve.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "code_version": code_version(),
                               "results": rows}, indent=2))
    print(table(rows) + f"\nwrote {out}")


if __name__ == "__main__":
    main()
