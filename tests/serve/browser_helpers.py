"""The browser tests' view of a tab on the page at /ui."""

from __future__ import annotations

import time
from typing import Any


class Page:
    """A fresh tab on the server's /ui that records every request and page error, so a test can assert
    that the page loaded nothing from anywhere else and raised nothing."""

    def __init__(self, context: Any, base: str) -> None:
        self.base = base
        self.tab = context.new_page()
        self.requests: list[Any] = []
        self.errors: list[str] = []
        self.tab.on("request", lambda r: self.requests.append(r))
        self.tab.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, view: str = "") -> Any:
        self.tab.goto(f"{self.base}/ui" + (f"#{view}" if view else ""))
        return self.tab

    def foreign(self) -> list[str]:
        return [r.url for r in self.requests if not r.url.startswith((self.base + "/", "blob:", "data:"))]


def wait_until(tab: Any, expression: str, timeout: float = 30.0) -> Any:
    """Poll a JavaScript expression until it is truthy. (Playwright's wait_for_function evaluates its
    predicate with eval, which the page's Content-Security-Policy forbids, as it should.)"""
    deadline = time.monotonic() + timeout
    while not (value := tab.evaluate(expression)):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {expression}")
        time.sleep(0.02)
    return value
