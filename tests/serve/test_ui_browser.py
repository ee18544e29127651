"""The page at /ui in a real browser (Debian's chromium driven by Playwright) against a server on the
tiny models: it loads, chats with streamed text, stops a generation on the server, draws an
embeddings heatmap and a model's graph, and fits a phone's width."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
from browser_helpers import Page, wait_until
from prometheus_client.parser import text_string_to_metric_families

from onnxkit.inspect import inspect_model
from onnxkit.serve.server import Server
from onnxkit.view import rendering

SYSTEM = "You are a helpful assistant."  # the page's default system prompt

# Timestamps taken in the page, independently of its code: when each chunk of a response body reached
# the page (every fetch stream read), and when each state of the last reply's text reached a frame.
TIMING = """
window.__reads = [];
const read = ReadableStreamDefaultReader.prototype.read;
ReadableStreamDefaultReader.prototype.read = function () {
  return read.call(this).then((r) => {
    if (r.value) window.__reads.push({ t: performance.now(), text: new TextDecoder().decode(r.value) });
    return r;
  });
};
window.__frames = [];
document.addEventListener("DOMContentLoaded", () => {
  const log = document.getElementById("chat-log");
  new MutationObserver(() => {
    const body = log.querySelector(".msg.assistant:last-of-type .body");
    if (!body) return;
    const text = body.textContent;
    requestAnimationFrame(() => window.__frames.push({ t: performance.now(), text }));
  }).observe(log, { childList: true, subtree: true, characterData: true });
});
"""


def _counter(server: Server, name: str, model: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and s.labels.get("model") == model
    )


def _set(tab: Any, selector: str, value: str) -> None:
    # Works for range inputs too, which Playwright's fill() does not take.
    tab.locator(selector).evaluate(
        "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }", value
    )


def _options(tab: Any, selector: str) -> list[str]:
    return list(tab.locator(f"{selector} option").all_inner_texts())


def test_page_loads_offline_and_small(ui: Page, server: Server) -> None:
    tab = ui.open()
    wait_until(tab, "document.querySelector('#chat-model').options.length > 0")
    tab.wait_for_load_state("networkidle")
    assert _options(tab, "#chat-model") == ["tiny-chat"]
    assert _options(tab, "#embed-model") == ["tiny-embed"]
    assert tab.title() == "Chat · onnxkit"
    # The first load, everything the page fetched included (API calls too), in bytes on the wire.
    sizes = [r.sizes() for r in ui.requests]
    transferred = sum(s["responseBodySize"] + s["responseHeadersSize"] for s in sizes)
    assert 10_000 < transferred < 300 * 1024, transferred
    # Structured output and rerank show only where the server's OpenAPI schema advertises them.
    spec = httpx.get(server.url + "/openapi.json").json()
    chat = spec["components"]["schemas"]["ChatRequest"]["properties"]
    assert tab.locator("#chat-schema-field").is_visible() == ("response_format" in chat)
    tab.goto(server.url + "/ui#tasks")
    wait_until(tab, "!document.querySelector('#tasks-empty').hidden || !document.querySelector('#rerank-form').hidden")
    assert tab.locator("#rerank-form").is_visible() == ("/v1/rerank" in spec["paths"])


def _long_seed(server: Server, max_tokens: int) -> int:
    """A seed with which the random tiny model writes max_tokens tokens without reaching its end token.

    Sampled, it writes visible text (greedy, only newlines) at thousands of tokens per second: a long
    reply is what spans enough frames to see it stream."""
    for seed in range(64):
        body = {
            "model": "tiny-chat", "max_tokens": max_tokens, "temperature": 1.0, "top_p": 1.0, "seed": seed,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello"}],
        }  # fmt: skip
        reply = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60).json()
        if reply["choices"][0]["finish_reason"] == "length" and reply["choices"][0]["message"]["content"].strip():
            return seed
    raise AssertionError("no seed in 0..63 makes the tiny model write to its max_tokens")


def _reply(tab: Any) -> tuple[str, list[float], list[dict[str, Any]], str]:
    """Send "Hello" in a fresh conversation: the stats line, when each text-carrying read reached the page,
    each frame's text, and the reply's final text."""
    tab.click("#chat-clear")
    tab.evaluate("window.__reads = []; window.__frames = []")
    tab.fill("#chat-input", "Hello")
    tab.press("#chat-input", "Enter")
    wait_until(tab, "document.querySelector('#chat-status').textContent === 'Reply complete'")
    stats = tab.locator(".msg.assistant .stats").inner_text()
    reads: list[dict[str, Any]] = tab.evaluate("window.__reads")
    texts = [r["t"] for r in reads if '"content":"' in r["text"].replace('"content":""', "")]
    return stats, texts, tab.evaluate("window.__frames"), tab.locator(".msg.assistant .body").text_content() or ""


def test_chat_streams_text_at_the_server_rate(ui: Page, server: Server) -> None:
    seed = _long_seed(server, 1500)
    ui.tab.add_init_script(TIMING)
    tab = ui.open("chat")
    wait_until(tab, "document.querySelector('#chat-model').options.length > 0")
    _set(tab, "#chat-temperature", "1")
    tab.fill("#chat-max-tokens", "1500")
    tab.fill("#chat-seed", str(seed))
    stats, texts, frames, final = _reply(tab)
    assert "1500 tokens" in stats and "finish: length" in stats, stats
    assert "tokens/s" in stats and "time to first token" in stats, stats
    assert tab.locator(".msg.user").inner_text().endswith("Hello")
    assert final.strip()
    # Streamed: text was on screen while the events were still arriving, and it grew from there.
    assert len(texts) >= 3, f"the reply came in {len(texts)} reads"
    early = [f["text"] for f in frames if f["text"] and f["t"] < texts[-1]]
    assert early and len(early[0]) < len(final), (len(early), len(frames))
    # The time from the last SSE event carrying text to that text on screen (issue 14: under 100 ms).
    # A frame is the browser's to schedule: on a machine starved of CPU one can come late, so a second
    # reply (the same text: same seed) gets a second look; a page that batches its drawing fails both.
    lags = [min(f["t"] for f in frames if f["text"] == final) - texts[-1]]
    if lags[0] >= 100:
        _, texts, frames, again = _reply(tab)
        assert again == final
        lags.append(min(f["t"] for f in frames if f["text"] == final) - texts[-1])
    assert min(lags) < 100, lags


def test_stop_cancels_the_generation_on_the_server(ui: Page, server: Server) -> None:
    before = _counter(server, "onnxkit_generated_tokens_total", "tiny-chat")
    ui.tab.add_init_script(TIMING)
    tab = ui.open("chat")
    wait_until(tab, "document.querySelector('#chat-model').options.length > 0")
    # Greedy, the random tiny model never writes its end token: it would run to max_tokens (seconds).
    _set(tab, "#chat-temperature", "0")
    tab.fill("#chat-max-tokens", "8000")
    tab.fill("#chat-input", "Tell me a long story.")
    tab.click("#chat-send")
    wait_until(tab, "window.__reads.filter((r) => r.text.includes('\"content\"')).length >= 3")
    tab.click("#chat-stop")
    wait_until(tab, "document.querySelector('#chat-status').textContent === 'Stopped'")
    assert "finish: stopped" in tab.locator(".msg.assistant .stats").inner_text()
    assert tab.locator("#chat-stop").is_disabled() and tab.locator("#chat-send").is_enabled()
    # The server counts a generation's tokens when it ends: a cancelled one ends now, short of 8000.
    deadline = time.monotonic() + 10
    while (counted := _counter(server, "onnxkit_generated_tokens_total", "tiny-chat")) == before:
        assert time.monotonic() < deadline, "the generation did not end after Stop"
        time.sleep(0.05)
    assert 0 < counted - before < 8000
    time.sleep(1.0)
    assert _counter(server, "onnxkit_generated_tokens_total", "tiny-chat") == counted


# A small schema with bounded fields, so the random tiny model's constrained reply ends well within max_tokens.
CITY = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "capital": {"type": "boolean"}},
    "required": ["name", "capital"], "additionalProperties": False,
}  # fmt: skip


def test_json_schema_box_holds_the_reply_to_the_schema(ui: Page) -> None:
    tab = ui.open("chat")
    wait_until(tab, "document.querySelector('#chat-model').options.length > 0")
    tab.locator("#chat-schema").fill("{not json")
    tab.fill("#chat-input", "Describe a city.")
    tab.press("#chat-input", "Enter")
    wait_until(tab, "document.querySelector('#chat-status').textContent.startsWith('The JSON schema does not parse')")
    assert tab.locator(".msg").count() == 0  # nothing was sent
    tab.locator("#chat-schema").fill(json.dumps(CITY))
    _set(tab, "#chat-temperature", "0.7")
    tab.fill("#chat-max-tokens", "300")
    tab.fill("#chat-seed", "3")
    tab.press("#chat-input", "Enter")
    wait_until(tab, "document.querySelector('#chat-status').textContent === 'Reply complete'")
    assert "finish: stop" in tab.locator(".msg.assistant .stats").inner_text()
    # Shown verbatim (not as markdown), and it is what the schema asked for.
    jsonschema.validate(json.loads(tab.locator(".msg.assistant .body pre").text_content() or ""), CITY)
    assert '"response_format":{"type":"json_schema"' in (tab.locator("#chat-curl").text_content() or "")


def test_embeddings_heatmap(ui: Page, server: Server) -> None:
    tab = ui.open("embeddings")
    wait_until(tab, "document.querySelector('#embed-model').options.length > 0")
    texts = [t.strip() for t in tab.input_value("#embed-input").splitlines() if t.strip()]
    tab.click("#embed-form button[type=submit]")
    tab.wait_for_selector("table.heatmap")
    cells = tab.locator("table.heatmap tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.querySelectorAll('td')].map(td => Number(td.textContent)))"
    )
    reply = httpx.post(server.url + "/v1/embeddings", json={"model": "tiny-embed", "input": texts}).json()
    vectors = np.array([d["embedding"] for d in reply["data"]])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(np.array(cells), unit @ unit.T, atol=0.006)
    summary = tab.locator("#embed-result .summary").inner_text()
    assert f"{len(texts)} vectors × {vectors.shape[1]} dimensions" in summary and "round trip" in summary


def test_model_page_with_graph_and_infer_form(ui: Page, server: Server, tiny_embed_model: Path) -> None:
    tab = ui.open("models")
    tab.get_by_role("link", name="tiny-embed").click()
    tab.wait_for_selector(".graph svg rect")
    expected = rendering(tiny_embed_model, ".svg").count("<rect")
    assert tab.locator(".graph svg rect").count() == expected
    report = inspect_model(tiny_embed_model)
    page = tab.locator("#model-detail").inner_text()
    assert "input_ids" in page and "int64" in page and "READY" in page
    assert f"{report['parameters']['count'] / 1e3:.1f} k" in page  # the parameter count, as the page writes it
    assert "ai.onnx" in page and "pooling" in page  # opsets, the card
    tab.wait_for_selector("#infer-title")
    tab.get_by_role("button", name="Infer").click()
    tab.wait_for_selector(".infer-out h4")
    assert "embeddings FP32 [1, 32]" in tab.locator(".infer-out").inner_text()


def _requests_cell(tab: Any, model: str) -> str:
    return str(tab.evaluate(
        """(model) => [...document.querySelectorAll('#server-models tbody tr')]
             .find((r) => r.cells[0].textContent === model)?.cells[3].textContent ?? ''""", model))  # fmt: skip


def test_server_view_follows_health_and_metrics(ui: Page, server: Server) -> None:
    tab = ui.open("server")
    wait_until(tab, "document.querySelector('#server-models tbody tr') !== null")
    health = httpx.get(server.url + "/health").json()
    assert f"Status\n{health['status']}\n" in tab.locator("#server-health").inner_text()
    assert _requests_cell(tab, "tiny-chat") != "" and _requests_cell(tab, "tiny-embed") != ""
    for _ in range(3):
        httpx.post(server.url + "/v1/embeddings", json={"model": "tiny-embed", "input": "hello"}).raise_for_status()
    # The next scrape (every 2 s) shows /metrics' successful requests for the model, and the
    # requests-per-second chart has drawn a point for that interval.
    served = _counter(server, "onnxkit_requests_total", "tiny-embed")  # success and failure; none failed here
    deadline = time.monotonic() + 10
    while _requests_cell(tab, "tiny-embed") != str(int(served)):
        assert time.monotonic() < deadline, (_requests_cell(tab, "tiny-embed"), served)
        time.sleep(0.1)
    wait_until(tab, "document.querySelector('#chart-rps polyline').getAttribute('points') !== ''", timeout=10)
    assert float(tab.locator("#chart-rps .now").inner_text()) >= 0


def test_layout_fits_phone_and_desktop_widths(ui: Page) -> None:
    tab = ui.open()
    for width, height in ((390, 844), (1280, 900)):
        tab.set_viewport_size({"width": width, "height": height})
        for view in ("chat", "embeddings", "tasks", "models", "server"):
            tab.goto(f"{ui.base}/ui#{view}")
            tab.wait_for_selector(f"#view-{view}:not([hidden])")
            overflow = tab.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, (width, view, overflow)


MARKDOWN = """Three tips:

1. **Know** your *audience*

2. Use `code` and [links](https://example.org/x)
- a bullet
<img src=x onerror="window.__owned = true"> stays text
```
<b>not bold</b>
```"""


def test_chat_markdown_is_built_from_text(ui: Page) -> None:
    tab = ui.open()
    html = tab.evaluate(
        """async (text) => {
             const { markdown } = await import("/ui/js/markdown.js");
             const box = document.createElement("div");
             box.append(markdown(text));
             return box.innerHTML;
           }""",
        MARKDOWN,
    )
    assert "<p>Three tips:</p>" in html
    # A blank line between numbered items keeps one list, as models write them.
    assert '<ol start="1"><li><strong>Know</strong> your <em>audience</em></li><li>Use <code>code</code>' in html
    assert '<a href="https://example.org/x" rel="noopener noreferrer" target="_blank">links</a>' in html
    assert "<ul><li>a bullet</li></ul>" in html
    # What a model writes is never markup: the tag arrives as text, and nothing ran.
    assert "&lt;img src=x onerror=" in html and "<img" not in html
    assert "<pre><code>&lt;b&gt;not bold&lt;/b&gt;</code></pre>" in html
    assert tab.evaluate("window.__owned === undefined")


# WCAG contrast of every visible text and a name on every control (see the file).
AUDIT = (Path(__file__).parent / "ui_audit.js").read_text()


def test_contrast_labels_and_keyboard(ui: Page) -> None:
    tab = ui.open()
    wait_until(tab, "document.querySelector('#chat-model').options.length > 0")
    # Keyboard only: Tab from the top reaches the menu; Enter opens a view.
    for _ in range(8):
        tab.keyboard.press("Tab")
        if tab.evaluate("document.activeElement.textContent") == "Embeddings":
            break
    tab.keyboard.press("Enter")
    tab.wait_for_selector("#view-embeddings:not([hidden])")
    tab.keyboard.press("Tab")  # focus moves on into the page
    tab.click("#embed-form button[type=submit]")
    tab.wait_for_selector("table.heatmap")
    for scheme in ("light", "dark"):
        tab.emulate_media(color_scheme=scheme)
        for view in ("embeddings", "chat", "tasks", "models/tiny-embed", "server"):
            tab.goto(f"{ui.base}/ui#{view}")
            tab.wait_for_selector(f"#view-{view.split('/')[0]}:not([hidden])")
            if view == "embeddings":
                tab.click("#embed-form button[type=submit]")
                tab.wait_for_selector("table.heatmap")
            if view.startswith("models/"):
                tab.wait_for_selector(".graph svg")
            assert tab.evaluate(AUDIT) == [], (scheme, view)
