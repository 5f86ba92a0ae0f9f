"""Screenshots of the dashboards as a person sees them, in a real (headless) Chromium: TensorBoard's scalars over a
runs folder, and the Ray dashboard of a running local cluster (logged in with the cluster's token).

    python experiments/screenshot_dashboards.py --tensorboard runs/tune/sweep_rent --filter train/
    python experiments/screenshot_dashboards.py --ray-dashboard http://127.0.0.1:8265      # while a job runs

Needs Chromium and its driver (Debian: `apt-get install chromium chromium-driver`) and `pip install selenium`;
not part of the set-up, since only docs need it. Writes PNGs into --out (default docs/img).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import quote


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tensorboard", type=Path, default=None, metavar="LOGDIR", help="serve LOGDIR and screenshot it")
    p.add_argument("--filter", default="", help="TensorBoard tag filter (e.g. train/ or ops/)")
    p.add_argument("--ray-dashboard", default=None, metavar="URL", help="a running Ray dashboard (printed by our scripts)")
    p.add_argument("--ray-page", default="actors", help="dashboard page: overview, jobs, cluster, actors (default %(default)s)")
    p.add_argument("--token-file", type=Path, default=Path.home() / ".ray" / "auth_token",
                   help="the cluster token the dashboard asks for (default %(default)s)")
    p.add_argument("--out", type=Path, default=Path("docs/img"), help="folder for the PNGs (default %(default)s)")
    p.add_argument("--name", default=None, help="file name stem (default: tensorboard_scalars / ray_dashboard)")
    p.add_argument("--wait", type=float, default=12.0, help="seconds to let a page render (default %(default)s)")
    return p.parse_args()


def _browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        sys.exit("error: needs selenium (pip install selenium)")
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        sys.exit("error: needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,950"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def tensorboard_shot(browser, logdir: Path, tag_filter: str, out: Path, wait: float) -> None:
    from esper.nissa.dashboards import TensorBoard
    from esper.serve.launch import free_loopback_port

    with TensorBoard(logdir, port=free_loopback_port()) as board:
        time.sleep(6)  # first load of the event files
        browser.get(f"{board.url}/?tagFilter={quote(tag_filter)}#timeseries")
        time.sleep(wait)
        _close_settings(browser)
        time.sleep(2)
        browser.save_screenshot(str(out))


def _close_settings(browser) -> None:
    """Close TensorBoard's settings pane, which opens over the charts (best effort: the page may change). Its
    smoothing (default 0.6) stays: setting it from a script does not take in TensorBoard 2.21's UI."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    try:
        for button in browser.find_elements(By.CSS_SELECTOR, "button[aria-label*='lose']"):
            browser.execute_script("arguments[0].click();", button)
    except WebDriverException as exc:
        print(f"note: could not close the settings pane ({type(exc).__name__})")


def ray_dashboard_shot(browser, url: str, page: str, token_file: Path, out: Path, wait: float) -> None:
    if not token_file.is_file():
        sys.exit(f"error: no token file {token_file} (the cluster's token: docs/security.md)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url.rstrip("/") + f"/#/{page}")
    # the page asks for the cluster's token (token auth is on): type it in as a person would
    field = WebDriverWait(browser, 30).until(ready.presence_of_element_located(
        (By.CSS_SELECTOR, "input[placeholder*='authentication token']")))
    field.send_keys(token_file.read_text().strip())
    browser.find_element(By.XPATH, "//button[normalize-space()='Submit' or normalize-space()='SUBMIT']").click()
    time.sleep(wait)
    browser.save_screenshot(str(out))


def main() -> None:
    args = _parse()
    if args.tensorboard is None and args.ray_dashboard is None:
        sys.exit("error: give --tensorboard LOGDIR and/or --ray-dashboard URL")
    if args.tensorboard is not None and not args.tensorboard.is_dir():
        sys.exit(f"error: {args.tensorboard} is not a folder")
    args.out.mkdir(parents=True, exist_ok=True)
    browser = _browser()
    try:
        if args.tensorboard is not None:
            path = args.out / f"{args.name or 'tensorboard_scalars'}.png"
            tensorboard_shot(browser, args.tensorboard, args.filter, path, args.wait)
            print(f"wrote {path}")
        if args.ray_dashboard is not None:
            path = args.out / f"{args.name or 'ray_dashboard'}.png"
            ray_dashboard_shot(browser, args.ray_dashboard, args.ray_page, args.token_file, path, args.wait)
            print(f"wrote {path}")
    finally:
        browser.quit()


if __name__ == "__main__":
    main()
