"""Headless Chromium for the page tests, and axe-core from npm to scan the pages.

Chromium and chromedriver are Debian's (.ci/run installs them); selenium is given the driver's
path, so it never tries to download one. axe-core is the npm package's tarball from the npm
registry, checked against the integrity npm publishes for it, unpacked once into .cache/.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import KEY, ROOT, require_binary

WAIT = 15  # seconds a page may take to show what a test waits for
AXE_VERSION = "4.14.1"
AXE_TARBALL = f"https://registry.npmjs.org/axe-core/-/axe-core-{AXE_VERSION}.tgz"
# `npm view axe-core@4.14.1 dist.integrity`
AXE_INTEGRITY = (
    "sha512-"
    "FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
)
AXE_FILE = ROOT / ".cache" / f"axe-core-{AXE_VERSION}.min.js"


def chrome() -> Any:
    """A headless Chromium whose console log can be read (skip without one, except in CI)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = require_binary("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(require_binary("chromedriver")), options=options)


def axe_source() -> str:
    """axe.min.js of the pinned axe-core, fetched from the npm registry once."""
    if not AXE_FILE.exists():
        try:
            with urllib.request.urlopen(AXE_TARBALL, timeout=60) as response:
                tarball = response.read()
        except OSError as e:
            if os.environ.get("CI") == "true":
                pytest.fail(f"axe-core cannot be fetched from {AXE_TARBALL}: {e}")
            pytest.skip(f"axe-core cannot be fetched: {e}")
        algorithm, _, expected = AXE_INTEGRITY.partition("-")
        digest = base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode()
        assert digest == expected, f"{AXE_TARBALL} does not match its published integrity"
        with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:
            member = archive.extractfile("package/axe.min.js")
            assert member is not None
            source = member.read()
        AXE_FILE.parent.mkdir(exist_ok=True)
        partial = AXE_FILE.with_suffix(f".{os.getpid()}.partial")
        partial.write_bytes(source)
        partial.replace(AXE_FILE)  # whole or absent: parallel test workers may race here
    return AXE_FILE.read_text()


def axe_violations(driver: Any, source: str) -> list[dict[str, Any]]:
    """Run axe-core on the page the driver shows; return its serious and critical violations."""
    driver.execute_script(source)
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document).then((r) => done(r.violations), (e) => done([{id: String(e)}]));"
    )
    return [v for v in result if v.get("impact") in ("serious", "critical", None)]


def wait(driver: Any, check: Callable[[Any], Any], what: str) -> Any:
    return WebDriverWait(driver, WAIT).until(check, message=f"waiting for {what}")


def open_with_key(driver: Any, url: str, key: str = KEY) -> None:
    """Open a page with the key already in the tab's sessionStorage (the tab must show the
    service's origin: sessionStorage is per origin); wait for the form."""
    driver.execute_script("sessionStorage.setItem('modelrun.apiKey', arguments[0])", key)
    driver.get(url)
    wait(driver, lambda d: d.find_element(By.ID, "predict-button").is_enabled(), "the form")


def errors_in_console(driver: Any) -> list[dict[str, Any]]:
    """The console's errors. Chromium asks for /favicon.ico when a document links no icon (the
    fixture's blank tab, a stylesheet), sometimes after the fixture read the log;
    functions-framework answers that path 404 itself (test_reliability.py). The pages link
    /ui/favicon.png, so that request is not theirs."""
    return [
        entry
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "/favicon.ico " not in entry["message"]
    ]
