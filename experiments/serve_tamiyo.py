"""Serve a trained Tamiyo (agent.pt) over HTTP with Ray Serve (esper/serve/process.py).

    python experiments/serve_tamiyo.py --agent runs/ppo/<run>/agent.pt            # http://127.0.0.1:8000, Ctrl-C stops
    python experiments/serve_tamiyo.py --agent A.pt --address auto                # on a running Ray cluster
    ESPER_TAMIYO_TOKEN=$(openssl rand -hex 24) \\
      python experiments/serve_tamiyo.py --agent A.pt --host 0.0.0.0              # exposed: a token is required
    python experiments/serve_tamiyo.py --agent B.pt --address auto --reload      # hot-swap the running server's policy
    python experiments/serve_tamiyo.py --domain vision=V.pt --domain text=T.pt   # one core, an adapter per domain
                                                      # (requests say "domain": "text"; the first is the default)

Routes (docs/api.md): POST /v1/decide, POST /v1/decide/batch, GET /v1/policy, GET /healthz. A bad flag or agent
file ends the script in one line before any cluster starts.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from esper.study.cli import checked, fail, script_parser, show_progress


def _config(args):
    """The ServeConfig of the flags; a bad value ends the script in one line naming the field."""
    from pydantic import ValidationError

    from esper.serve.config import ServeConfig

    try:
        domains = dict(_domain(d) for d in args.domain)
        return ServeConfig(agent=args.agent, domains=domains, host=args.host, port=args.port, token=args.token, ingress=args.ingress,
                           replicas=args.replicas, max_batch_size=args.max_batch_size)
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()))


def _domain(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        fail(f"--domain {text!r}: expected NAME=PATH (e.g. --domain text=runs/core/text/agent.pt)")
    return name, Path(path)


def main() -> None:
    p = script_parser(__doc__, preset=None)
    p.add_argument("--agent", type=Path, default=None, help="agent.pt to serve")
    p.add_argument("--domain", action="append", default=[], metavar="NAME=PATH",
                   help="serve several domains from one deployment: core agents on one core (repeatable; "
                        "instead of --agent)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s; non-loopback needs a token)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", default=os.environ.get("ESPER_TAMIYO_TOKEN"),
                   help="bearer token (default: $ESPER_TAMIYO_TOKEN; prefer the variable: flags show up in `ps`)")
    p.add_argument("--ingress", choices=["proxy", "haproxy"], default="haproxy",
                   help="HTTP front end: HAProxy (default; ≈ 2–4 ms a decision) or Serve's Python proxy (≈ 10 ms); "
                        "docs/api.md")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--max-batch-size", type=int, default=32, help="@serve.batch size for single decisions")
    p.add_argument("--address", default=None, help="Ray cluster address ('auto' = the running one); default: start a local one")
    p.add_argument("--reload", action="store_true", help="swap the agent of the server already running on --address")
    p.add_argument("--detach", action="store_true", help="leave the server running on the cluster and exit")
    p.add_argument("--no-ray-dashboard", dest="ray_dashboard", action="store_false",
                   help="do not start the Ray dashboard (default: on 127.0.0.1 for a local cluster; URL printed)")
    args = p.parse_args()
    cfg = _config(args)
    from esper.serve import process
    from esper.serve.domains import ServedDomains

    checked(lambda: ServedDomains.load(cfg.agents()).canary(), ValueError, RuntimeError)  # a bad file fails in a second
    if (args.reload or args.detach) and args.address is None:
        fail("--reload and --detach need --address of a running cluster (a local one dies with this process)")
    show_progress()
    if args.reload:
        checked(lambda: process.reload(cfg, args.address), ValueError, RuntimeError)
        print(f"reloaded {cfg.agents()}")
        return
    cluster = process.Cluster(args.address, args.ray_dashboard, args.detach)
    checked(lambda: process.serve(cfg, cluster), ValueError, RuntimeError)
    if args.address is None and not args.detach:
        # Serve, HAProxy and the local cluster are stopped and reaped by now. A Ray driver whose cluster is gone can
        # still hang in interpreter teardown (seen late in full test runs here: > 180 s), so end the process now.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
