"""The Tasks view in a real browser against tiny classification, zero-shot and QA exports: bars with the
server's scores, and the answer marked inside the context (offsets in code points, as the API gives them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_helpers import Page

from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import Server


@pytest.fixture(scope="module")
def server(task_exports: dict[str, Path]) -> Iterator[Server]:
    with Server([ModelSpec(n, p) for n, p in task_exports.items()], port=0) as s:
        yield s


def _bars(tab: Any, form: str) -> list[tuple[str, float]]:
    rows = tab.locator(f"#{form}-result .bars li").all_inner_texts()
    return [(row.split("\n")[0], float(row.split("\n")[-1])) for row in rows]


def test_classification_zero_shot_and_qa(ui: Page, server: Server) -> None:
    tab = ui.open("tasks")
    tab.locator("#cls-form").wait_for()
    assert not tab.locator("#tasks-empty").is_visible()

    tab.fill("#cls-input", "a quick brown fox")
    tab.click("#cls-form button[type=submit]")
    tab.wait_for_selector("#cls-result .bars")
    api = httpx.post(server.url + "/v1/classify", json={"model": "tiny-cls", "input": "a quick brown fox"}).json()
    assert _bars(tab, "cls") == [(x["label"], round(x["score"], 3)) for x in api["data"][0]["labels"]]

    tab.fill("#zs-labels", "sports, weather")
    tab.click("#zs-form button[type=submit]")
    tab.wait_for_selector("#zs-result .bars")
    assert sorted(label for label, _ in _bars(tab, "zs")) == ["sports", "weather"]

    context = "Où est-ce? The Eiffel tower is in Paris, in France."  # non-ASCII before the answer
    tab.fill("#qa-context", context)
    tab.fill("#qa-question", "where is the tower?")
    tab.click("#qa-form button[type=submit]")
    tab.wait_for_selector("#qa-result mark")
    answer = httpx.post(server.url + "/v1/qa", json={"model": "tiny-qa", "question": "where is the tower?",
                                                      "context": context}).json()["data"][0]  # fmt: skip
    assert tab.locator("#qa-result mark").inner_text() == context[answer["start"] : answer["end"]]
    assert tab.locator("#qa-result .context").inner_text() == context
    assert "/v1/qa" in tab.locator("#tasks-curl").text_content()
