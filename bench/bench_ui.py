"""Issue 14's page figures, measured in one run on the default chat model (models cached: `make models`;
chromium installed: `make browser`).

- first load of /ui: bytes on the wire, everything included (the issue's bound: 300 KB);
- streaming lag: for every SSE read that carries text, the time until the next frame that shows it,
  p50 / p95 / max, and for the last one (the issue's bound: 100 ms); timestamps taken in the page by an
  init script, independently of the page's code;
- the page's decode rate (tokens/s, as it shows it) against the openai SDK streaming the same greedy
  requests from Python in the same run: a ratio near 1.0 means drawing does not slow the stream.
"""

from __future__ import annotations

import re
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from openai import OpenAI

from onnxkit.models.cache import Cache
from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import Server
from onnxkit.settings import default_home

CHAT = "smollm2-135m-instruct"
SYSTEM = "You are a helpful assistant."  # the page's default system prompt
PROMPTS = ["Write a short story about a lighthouse keeper.", "Explain how rainbows form.",
           "List some tips for learning a new language.", "Describe the water cycle."]  # fmt: skip
NEW_TOKENS = 128
ROUNDS = 2
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
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
  new MutationObserver(() => requestAnimationFrame(() => window.__frames.push(performance.now())))
    .observe(log, { childList: true, subtree: true, characterData: true });
});
"""


def sdk_rate(client: OpenAI, prompt: str) -> float:
    """Decode tokens/s of one greedy streamed reply, as the page computes it: (n - 1) / (last - first)."""
    stamps = []
    stream = client.chat.completions.create(
        model=CHAT, max_tokens=NEW_TOKENS, temperature=0, top_p=1.0, stream=True,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
    )  # fmt: skip
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def page_reply(t: Any, prompt: str) -> tuple[float, list[float], float]:
    """The page's tokens/s, each text read's lag to the next frame (ms), and the last read's (t: a tab)."""
    t.evaluate("window.__reads = []; window.__frames = []")
    t.click("#chat-clear")
    t.fill("#chat-input", prompt)
    t.press("#chat-input", "Enter")
    deadline = time.monotonic() + 120
    while t.evaluate("document.querySelector('#chat-status').textContent") != "Reply complete":
        if time.monotonic() > deadline:
            raise TimeoutError("no reply in 120 s")
        time.sleep(0.25)  # each poll is a task in the page: keep them rare while it streams
    stats = t.evaluate("document.querySelector('.msg.assistant .stats').textContent")
    rate = float(re.search(r"([\d.]+) tokens/s", stats).group(1))
    reads = [r["t"] for r in t.evaluate("window.__reads") if re.search(r'"content":"[^"]', r["text"])]
    frames = sorted(t.evaluate("window.__frames"))
    lags = [min((f for f in frames if f >= r), default=float("inf")) - r for r in reads]
    return rate, lags, lags[-1]


def main() -> int:
    from playwright.sync_api import sync_playwright

    found = Cache(default_home()).get(CHAT)
    if found is None:
        sys.exit(f"{CHAT} is not cached: run `onnxkit pull {CHAT}`")
    chromium = shutil.which("chromium")
    if chromium is None:  # `make bench` runs every bench: say why this one did nothing, and go on
        print("bench_ui skipped: chromium is not installed (`make browser` runs apt-get install -y chromium)")
        return 0
    with Server([ModelSpec(CHAT, found.path)], port=0, access_log=False) as server, sync_playwright() as p:
        client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        sdk_rate(client, "Warm up.")
        with tempfile.TemporaryDirectory() as profile:
            context = p.chromium.launch_persistent_context(
                profile, executable_path=chromium, headless=True, args=ARGS, viewport={"width": 1280, "height": 900}
            )
            tab = context.new_page()
            requests: list[Any] = []
            tab.on("request", lambda r: requests.append(r))
            tab.add_init_script(TIMING)
            tab.goto(server.url + "/ui#chat")
            tab.wait_for_load_state("networkidle")
            sizes = [r.sizes() for r in requests]
            first_load = sum(s["responseBodySize"] + s["responseHeadersSize"] for s in sizes)
            tab.locator("#chat-temperature").evaluate("e => { e.value = '0'; e.dispatchEvent(new Event('input')); }")
            tab.fill("#chat-max-tokens", str(NEW_TOKENS))
            page_reply(tab, "Warm up.")
            rows = []
            for prompt in PROMPTS * ROUNDS:  # interleaved, so the machine's drift hits both alike
                sdk = sdk_rate(client, prompt)
                page, lags, last = page_reply(tab, prompt)
                rows.append((prompt, sdk, page, lags, last))
            context.close()
    print(f"first load of /ui: {first_load / 1024:.1f} KB in {len(sizes)} requests (bound: 300 KB)")
    print(f"{'prompt':48} {'SDK tok/s':>9} {'page tok/s':>10} {'ratio':>6} "
          f"{'lag p50':>8} {'p95':>6} {'max':>6} {'last':>6}")  # fmt: skip
    for prompt, sdk, page, lags, last in rows:
        q = statistics.quantiles(lags, n=20) if len(lags) > 1 else [lags[0]] * 19
        print(f"{prompt[:48]:48} {sdk:9.1f} {page:10.1f} {page / sdk:6.2f} {statistics.median(lags):6.1f}ms "
              f"{q[18]:4.1f}ms {max(lags):4.1f}ms {last:4.1f}ms")  # fmt: skip
    ratios = [page / sdk for _, sdk, page, _, _ in rows]
    print(f"page/SDK decode rate: median {statistics.median(ratios):.2f}; "
          f"last-event lag max {max(r[4] for r in rows):.1f} ms (bound: 100 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
