"""Debian's headless Chromium driven by playwright-python, for the web page tests and
the README screenshot (tests/e2e/screenshot.py).

Helpers, not fixtures: test_web_page.py wraps them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STEP_TIMEOUT_MS = 30_000  # the longest one page step may take (an upload decodes + embeds)


class PageErrors(AssertionError):
    """The page threw uncaught JavaScript errors."""


@contextmanager
def chromium_page(
    width: int = 1280, height: int = 800, enforce_csp: bool = False
) -> Iterator[Page]:
    """A page in a fresh Chromium profile; uncaught JavaScript errors fail the block.

    Playwright's `wait_for_function` evaluates strings, which the page's Content-Security-
    Policy forbids (no eval): the tests bypass the policy unless `enforce_csp`, which
    test_web_page_works_under_its_content_security_policy uses (it waits on selectors)."""
    with (
        tempfile.TemporaryDirectory(prefix="mmv-chromium-") as profile,
        sync_playwright() as pw,
    ):
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": width, "height": height},
            bypass_csp=not enforce_csp,
        )
        context.set_default_timeout(STEP_TIMEOUT_MS)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # What the page's Content-Security-Policy blocks is a console error, not an
            # exception: it fails the test too.
            page.on("console", lambda m: _note_blocked(m.type, m.text, errors))
            yield page
            if errors:
                raise PageErrors(f"JavaScript errors on the page: {errors}")
        finally:
            context.close()


def _note_blocked(kind: str, text: str, errors: list[str]) -> None:
    if kind == "error" and "Content Security Policy" in text:
        errors.append(text)


def open_page(page: Page, base_url: str, path: str = "/") -> None:
    """Load the web page and wait until app.js has attached its handlers."""
    page.goto(base_url + path)
    page.wait_for_selector("html[data-ready]")


# What a user's drop does: dragenter, dragover and drop events carrying a DataTransfer
# with the file.
_DROP_FILE = """async ([selector, url, name]) => {
  const blob = await (await fetch(url)).blob();
  const dataTransfer = new DataTransfer();
  dataTransfer.items.add(new File([blob], name, { type: blob.type }));
  const zone = document.querySelector(selector);
  for (const type of ["dragenter", "dragover", "drop"]) {
    zone.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer }));
  }
}"""


def drop_file(page: Page, selector: str, url: str, name: str) -> None:
    """Drop the file the page fetches from `url` (same origin) on `selector` as `name`."""
    page.evaluate(_DROP_FILE, [selector, url, name])
