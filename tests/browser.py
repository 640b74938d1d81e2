"""Headless Chromium for the report tests: Debian's `chromium` driven by Playwright (never
`playwright install`, which downloads a browser; see ../shared/notes/headless-chromium.md).

`open_browser()` yields a page that records console errors and uncaught exceptions. The tests skip
when Chromium or Playwright is missing, unless STUDY_REQUIRE_BROWSER is set (CI), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    path = os.environ.get("STUDY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        message = "no chromium on PATH (tests/install_system_packages.sh installs Debian's)"
        if os.environ.get("STUDY_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@contextlib.contextmanager
def open_browser(width: int = 1400, height: int = 1000):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("STUDY_REQUIRE_BROWSER"):
            raise
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    executable = chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.errors = []
        page.requests = []
        page.on("console", lambda m: page.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: page.errors.append(f"page error: {e}"))
        page.on("request", lambda r: page.requests.append(r.url))
        try:
            yield page
        finally:
            browser.close()


def assert_not_blank(png: Path) -> None:
    """A screenshot with real content: many distinct colours and most pixels not background."""
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    colours = len(np.unique(pixels, axis=0))
    background = (pixels == pixels[0]).all(axis=1).mean()
    assert colours > 50 and background < 0.97, (png, colours, background)
