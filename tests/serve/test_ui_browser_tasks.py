"""The Tasks view in a real browser against tiny classification, zero-shot, QA, cross-encoder and embeddings
models: bars with the server's scores, the answer marked inside the context (offsets in code points, as the
API gives them), and documents ranked by /v1/rerank."""

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
def server(task_exports: dict[str, Path], tiny_cross_encoder: Path, tiny_embed_model: Path) -> Iterator[Server]:
    models = [ModelSpec(n, p) for n, p in task_exports.items()]
    models += [ModelSpec("tiny-cross", tiny_cross_encoder), ModelSpec("tiny-embed", tiny_embed_model)]
    with Server(models, port=0) as s:
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


def test_rerank_lists_the_models_that_rank_and_shows_their_order(ui: Page, server: Server) -> None:
    tab = ui.open("tasks")
    tab.locator("#rerank-form").wait_for()
    # An embeddings model and a one-logit classifier rank; tiny-cls (two labels) would be refused by /v1/rerank.
    assert sorted(tab.locator("#rerank-model option").all_inner_texts()) == ["tiny-cross", "tiny-embed"]
    documents = ["plants make sugar from light", "the market closed higher", "leaves hold chlorophyll"]
    for model in ("tiny-cross", "tiny-embed"):
        tab.select_option("#rerank-model", model)
        tab.fill("#rerank-query", "how do plants make food?")
        tab.fill("#rerank-docs", "\n".join(documents))
        tab.evaluate("document.querySelector('#rerank-result').replaceChildren()")
        tab.click("#rerank-form button[type=submit]")
        tab.wait_for_selector("#rerank-result .bars")
        api = httpx.post(server.url + "/v1/rerank", json={"model": model, "query": "how do plants make food?",
                                                          "documents": documents}).json()  # fmt: skip
        expected = [(f"{r['index'] + 1}. {documents[r['index']]}", round(r["relevance_score"], 3))
                    for r in api["results"]]  # fmt: skip
        assert _bars(tab, "rerank") == expected, model
    assert "/v1/rerank" in tab.locator("#tasks-curl").text_content()
