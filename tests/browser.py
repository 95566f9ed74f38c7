"""Real headless Chromium for the report tests, driven through Selenium and Debian's
`chromium` + `chromium-driver` (no Selenium Manager: the network is closed).

    chromium, chromedriver = ensure_chromium()          # apt-get installs them when missing
    with headless_chromium(chromium, chromedriver) as driver:
        driver.get("file:///tmp/report/index.html")
        driver.execute_script("return Array.from(document.images).map(i => i.naturalWidth)")
        full_page_screenshot(driver, "/tmp/report.png")
        console_errors(driver)      # the browser log's SEVERE entries (console.error, failed loads)

Used by tests/test_report_browser.py and tests/test_design_report.py.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from debian import apt_install

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PACKAGES = ["chromium", "chromium-driver"]
# Headless, no sandbox (root in a container), and nothing that reaches for the network.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]


def ensure_chromium(timeout: int = 900) -> tuple[Path, Path]:
    """Install Debian's `chromium` and `chromium-driver` (apt-get update, then install
    without recommends) unless /usr/bin/chromium and /usr/bin/chromedriver both exist.
    Raises RuntimeError with apt's output when that fails (not root, no network, no apt)."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return CHROMIUM, CHROMEDRIVER
    apt_install(PACKAGES, timeout)
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        raise RuntimeError(f"apt-get installed {PACKAGES} but {missing} are still missing")
    return CHROMIUM, CHROMEDRIVER


@contextlib.contextmanager
def headless_chromium(chromium: Path = CHROMIUM, chromedriver: Path = CHROMEDRIVER, *,
                      width: int = 1200, height: int = 900):
    """A Selenium WebDriver on headless Chromium with a fresh profile directory; the
    browser log (console messages, failed loads) is kept for `console_errors`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for flag in [*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An alert stays open (instead of being dismissed) so that a test can see it.
    options.unhandled_prompt_behavior = "ignore"
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(chromedriver)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver) -> list[str]:
    """Errors in the browser log since the last call: console.error, uncaught
    exceptions, resources that failed to load (level SEVERE)."""
    return [f"{e.get('source')}: {e['message']}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def open_dialog(driver) -> str | None:
    """The text of an open alert/confirm/prompt, or None."""
    from selenium.common.exceptions import NoAlertPresentException

    try:
        return driver.switch_to.alert.text
    except NoAlertPresentException:
        return None


def full_page_screenshot(driver, path: str | os.PathLike, width: int = 1200) -> tuple[int, int]:
    """PNG of the whole document, not just the viewport; returns (width, height) in CSS px."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    w, h = max(width, int(size["width"])), int(size["height"]) + 1
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": False})
    try:
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}})
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    Path(path).write_bytes(base64.b64decode(shot["data"]))
    return w, h
