"""A headless Debian Chromium driven by Selenium, for tests that look at pages as a person would.

Uses /usr/bin/chromium and /usr/bin/chromedriver from Debian (`make test` installs them);
nothing is downloaded at run time. Screenshots go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def chromium_start(*, window: str = "1400,1000"):
    """Debian's Chromium, headless, under Selenium, with a profile of its own: ``(driver, profile dir)``.

    Also used outside the tests (``python -m dashboard_shot``); the caller quits the driver and
    removes the profile.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="hitl-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # The machine's network is closed: background networking only produces refused connections.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--window-size={window}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # to see Content-Security-Policy refusals
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    return driver, profile


@pytest.fixture
def browser():
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("Debian's chromium and chromium-driver are required: `make test` installs them")
    driver, profile = chromium_start()
    yield driver
    refused = [entry["message"] for entry in driver.get_log("browser") if "Content Security Policy" in entry["message"]]
    driver.quit()
    assert refused == [], "the pages need something their Content-Security-Policy refuses"
    shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver, name: str) -> Path:
    """Save a PNG of the current page as a test artefact and return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


DOCS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


def viewport(driver, width: int, height: int) -> None:
    """Make the page's viewport exactly ``width`` x ``height`` CSS pixels (a laptop's 1366 x 768)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def docs_screenshot(driver, name: str, *, width: int = 1366, full_page: bool = False) -> Path:
    """Save a PNG for the README (``docs/screenshots/<name>.png``) and as a test artefact.

    ``full_page``: the viewport grows to the page's height first, so the picture holds all of it.
    """
    height = 768
    if full_page:
        viewport(driver, width, 768)
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    viewport(driver, width, height)
    # Let the page lay out and paint at the new size before the picture (else stale paint shows).
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(done, 200)));"
    )
    DOCS.mkdir(parents=True, exist_ok=True)
    path = DOCS / f"{name}.png"
    driver.save_screenshot(str(path))
    screenshot(driver, name)
    return path
