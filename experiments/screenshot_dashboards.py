"""Screenshots of the dashboards as a person sees them, in a real (headless) Chromium: TensorBoard's scalars over a
runs folder, and the Ray dashboard of a running local cluster (logged in with the cluster's token).

    python experiments/screenshot_dashboards.py --tensorboard runs/tune/sweep_rent --filter train/
    python experiments/screenshot_dashboards.py --ray-dashboard http://127.0.0.1:8265      # while a job runs

Needs Chromium and its driver (Debian: `apt-get install chromium chromium-driver`) and `pip install selenium`;
not part of the set-up, since only docs need it. Writes PNGs into --out (default docs/img). The logic is
esper/nissa/screenshots.py.
"""

from __future__ import annotations

from pathlib import Path

from esper.study.cli import checked, fail, script_parser, show_progress


def main() -> None:
    p = script_parser(__doc__, preset=None, out="docs/img")
    p.add_argument("--tensorboard", type=Path, default=None, metavar="LOGDIR", help="serve LOGDIR and screenshot it")
    p.add_argument("--filter", default="", help="TensorBoard tag filter (e.g. train/ or ops/)")
    p.add_argument("--ray-dashboard", default=None, metavar="URL", help="a running Ray dashboard (printed by our scripts)")
    p.add_argument("--ray-page", default="actors", help="dashboard page: overview, jobs, cluster, actors (default %(default)s)")
    p.add_argument("--token-file", type=Path, default=Path.home() / ".ray" / "auth_token",
                   help="the cluster token the dashboard asks for (default %(default)s)")
    p.add_argument("--name", default=None, help="file name stem (default: tensorboard_scalars / ray_dashboard)")
    p.add_argument("--wait", type=float, default=12.0, help="seconds to let a page render (default %(default)s)")
    args = p.parse_args()
    if args.tensorboard is None and args.ray_dashboard is None:
        fail("give --tensorboard LOGDIR and/or --ray-dashboard URL")
    if args.tensorboard is not None and not args.tensorboard.is_dir():
        fail(f"--tensorboard: {args.tensorboard} is not a folder")
    if args.ray_dashboard is not None and not args.token_file.is_file():
        fail(f"--token-file: no token file {args.token_file} (the cluster's token: docs/security.md)")
    from esper.nissa import screenshots

    show_progress()
    out = args.out or Path("docs/img")
    out.mkdir(parents=True, exist_ok=True)
    browser = checked(screenshots.browser, screenshots.ScreenshotError)
    try:
        if args.tensorboard is not None:
            path = out / f"{args.name or 'tensorboard_scalars'}.png"
            screenshots.tensorboard_shot(browser, args.tensorboard, args.filter, path, args.wait)
            print(f"wrote {path}")
        if args.ray_dashboard is not None:
            path = out / f"{args.name or 'ray_dashboard'}.png"
            screenshots.ray_dashboard_shot(browser, args.ray_dashboard, args.ray_page, args.token_file, path, args.wait)
            print(f"wrote {path}")
    finally:
        browser.quit()


if __name__ == "__main__":
    main()
