"""Screenshots of the dashboards as a person sees them, in a real (headless) Chromium: TensorBoard's scalars over a
runs folder, and the Ray dashboard of a running cluster (logged in with the cluster's token). What
experiments/screenshot_dashboards.py runs; the docs' images come from it.

Needs Chromium and its driver (Debian: `apt-get install chromium chromium-driver`) and `pip install selenium`; not
part of the set-up, since only docs need it. A missing one raises ScreenshotError before any page loads.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)


class ScreenshotError(RuntimeError):
    """What a screenshot needs is missing (selenium, Chromium, its driver, the cluster's token)."""


def browser():
    """A headless Chromium driven by selenium (1500 × 950); the caller quits it."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise ScreenshotError("needs selenium (pip install selenium)") from None
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        raise ScreenshotError("needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,950"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def tensorboard_shot(browser, logdir: Path, tag_filter: str, out: Path, wait: float) -> None:
    """Serve `logdir` with TensorBoard on a free loopback port and screenshot its time series (tags matching
    `tag_filter`) to `out`."""
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
        log.warning(f"note: could not close the settings pane ({type(exc).__name__})")


def ray_dashboard_shot(browser, url: str, page: str, token_file: Path, out: Path, wait: float) -> None:
    """Open `page` of the Ray dashboard at `url`, log in with the token in `token_file`, screenshot it to `out`."""
    if not token_file.is_file():
        raise ScreenshotError(f"no token file {token_file} (the cluster's token: docs/security.md)")
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
