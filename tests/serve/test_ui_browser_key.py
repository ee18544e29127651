"""The page against a server with an API key, in a real browser: it asks for the key, says so when the
key is wrong (never a blank page, never the server's data), and sends the right one with every call."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_helpers import Page, wait_until

from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import Server

KEY = "open-sesame"


@pytest.fixture(scope="module")
def server(tiny_embed_model: Path) -> Iterator[Server]:
    with Server([ModelSpec("tiny-embed", tiny_embed_model)], port=0, api_key=KEY) as s:
        yield s


def test_wrong_key_shows_an_error_and_the_right_one_opens_the_page(ui: Page) -> None:
    tab = ui.open("models")
    dialog = tab.locator("#key-dialog")
    dialog.wait_for(state="visible")
    assert tab.locator("#boot-error").inner_text() == "This server needs an API key before it shows anything."
    assert not tab.locator("#key-error").is_visible()  # no key yet: asked, not refused

    tab.fill("#key-input", "guess")
    tab.press("#key-input", "Enter")
    error = tab.locator("#key-error")
    error.wait_for(state="visible")
    assert "The server refused this key: API key wrong" in error.inner_text()
    assert dialog.is_visible() and tab.locator("#boot-error").is_visible()
    assert "tiny-embed" not in tab.content()  # nothing the API guards reached the page

    tab.fill("#key-input", KEY)
    tab.click("#key-form button[type=submit]")
    dialog.wait_for(state="hidden")
    tab.get_by_role("link", name="tiny-embed").wait_for()
    assert not tab.locator("#boot-error").is_visible()
    assert tab.locator("#forget-key").is_visible()
    api_calls = [r for r in ui.requests if r.url.startswith(ui.base + "/v1/")]
    authorized = [r for r in api_calls if r.headers.get("authorization") == f"Bearer {KEY}"]
    assert authorized and authorized[-1].url == ui.base + "/v1/models"

    # Kept for this tab: a reload does not ask again; "Forget API key" does.
    tab.reload()
    tab.get_by_role("link", name="tiny-embed").wait_for()
    assert not dialog.is_visible()
    tab.click("#forget-key")
    dialog.wait_for(state="visible")
    wait_until(tab, "document.querySelector('#key-input') === document.activeElement")
