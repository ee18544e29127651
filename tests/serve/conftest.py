from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import Page

from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import Server


@pytest.fixture(scope="module")
def server(tiny_chat_model: Path, tiny_embed_model: Path) -> Iterator[Server]:
    models = [ModelSpec("tiny-chat", tiny_chat_model), ModelSpec("tiny-embed", tiny_embed_model)]
    with Server(models, port=0, max_body_bytes=256 * 1024) as s:
        yield s


# -- a real browser for the page at /ui: Debian's chromium driven by Python Playwright ---------------
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _no_browser(why: str) -> None:
    # `make test` installs both; CI sets ONNXKIT_BROWSER_TESTS=required, so there a missing browser fails.
    message = f"browser tests skipped: {why}"
    if os.environ.get("ONNXKIT_BROWSER_TESTS") == "required":
        pytest.fail(message + " (ONNXKIT_BROWSER_TESTS=required)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless chromium per module (Playwright's own browser download is never used).

    Not per session: while Playwright's sync API is open it leaves its event loop set as the thread's
    running loop, so every pytest-asyncio test after it would fail ("Runner.run() cannot be called
    from a running event loop"). Closed at the end of the module, it takes its loop with it."""
    executable = os.environ.get("ONNXKIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        _no_browser("chromium is not installed (`make browser` runs `apt-get install -y chromium`)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        # A persistent context is how Playwright takes a fresh --user-data-dir of our choosing.
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def ui(browser: Any, server: Server) -> Iterator[Page]:
    page = Page(browser, server.url)
    try:
        yield page
        assert page.errors == [], f"the page raised: {page.errors}"
        assert page.foreign() == [], f"the page loaded from outside the server: {page.foreign()}"
    finally:
        page.tab.close()
