"""Screenshots of the page at /ui, one per view, into docs/img/ (the README shows them).

    make screenshots            # or: python scripts/screenshots.py [--out docs/img]

Serves the two default models (`onnxkit pull` first; `make screenshots` does) and three small
task models exported here from random weights (their labels and scores mean nothing; they show the
views), then drives Debian's chromium (apt-get install chromium) with Playwright.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from onnxkit.models.cache import Cache
from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import Server
from onnxkit.settings import default_home

DEFAULTS = ("smollm2-135m-instruct", "all-minilm-l6-v2")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
WORDS = [
    "the", "film", "was", "wonderful", "dull", "great", "boring", "match", "extra", "time", "politics", "vote",
    "weather", "sunny", "rain", "where", "is", "eiffel", "tower", "paris", "it", "finished", "in", "1889", "and",
    "about", "330", "metres", "tall", "what", "when", "who", "how",
]  # fmt: skip


def random_task_models(root: Path) -> list[ModelSpec]:
    """text-classification, zero-shot and QA exports of a 2-layer BERT with random weights (drawn wide, so
    the scores differ enough to see the bars)."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    from onnxkit.export import export

    vocab = {t: i for i, t in enumerate(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]))}
    specs = []
    for name, task, head, labels in (
        ("random-sentiment", "text-classification", "BertForSequenceClassification",
         {0: "negative", 1: "neutral", 2: "positive"}),
        ("random-nli", "zero-shot-classification", "BertForSequenceClassification",
         {0: "contradiction", 1: "neutral", 2: "entailment"}),
        ("random-qa", "question-answering", "BertForQuestionAnswering", None),
    ):  # fmt: skip
        hf = root / name / "hf"
        tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
        )  # fmt: skip
        transformers.PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
            mask_token="[MASK]", model_max_length=128,
            model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        ).save_pretrained(hf)  # fmt: skip
        torch.manual_seed(0)
        extra: dict[str, Any] = {"id2label": labels, "label2id": {v: k for k, v in labels.items()}} if labels else {}
        config = transformers.BertConfig(
            vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=128, initializer_range=0.6, **extra,
        )  # fmt: skip
        getattr(transformers, head)(config).save_pretrained(hf)
        specs.append(ModelSpec(name, export(hf, task, root / name / "out")))
    return specs


def launch(playwright: Any, profile: Path) -> Any:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        sys.exit("chromium is not installed: apt-get install -y chromium (or `make browser`)")
    return playwright.chromium.launch_persistent_context(
        str(profile), executable_path=executable, headless=True, args=ARGS, viewport={"width": 1280, "height": 800}
    )


def wait_text(tab: Any, selector: str, text: str, timeout: float = 120) -> None:
    # Polls with evaluate: wait_for_function would eval a string, which the page's CSP refuses.
    deadline = time.monotonic() + timeout
    while text not in (tab.evaluate(f"document.querySelector({json.dumps(selector)})?.textContent") or ""):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{selector} never showed {text!r}")
        time.sleep(0.1)


def traffic(url: str, stop: threading.Event) -> None:
    """Some load for the server view's charts: embeddings and short chat replies."""
    with httpx.Client(base_url=url, timeout=60) as client:
        while not stop.is_set():
            client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": ["a sentence"] * 8})
            client.post("/v1/chat/completions", json={
                "model": "smollm2-135m-instruct", "max_tokens": 16,
                "messages": [{"role": "user", "content": "Say something."}],
            })  # fmt: skip


TIP_SCHEMA = {
    "type": "object",
    "properties": {"tip": {"type": "string", "maxLength": 60}, "why": {"type": "string", "maxLength": 120}},
    "required": ["tip", "why"],
}


def shoot(url: str, out: Path, profile: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    written = []
    with sync_playwright() as p:
        context = launch(p, profile)
        tab = context.new_page()

        def save(name: str, full_page: bool = False) -> None:
            path = out / f"{name}.png"
            tab.evaluate("window.scrollTo(0, 0)")  # else the sticky header lands mid-page
            tab.screenshot(path=str(path), full_page=full_page)
            written.append(path)

        def chat(message: str) -> None:
            tab.fill("#chat-input", message)
            tab.press("#chat-input", "Enter")
            wait_text(tab, "#chat-status", "Reply complete")

        tab.goto(f"{url}/ui#chat")
        tab.wait_for_selector("#chat-model option", state="attached")
        tab.fill("#chat-max-tokens", "200")
        tab.fill("#chat-seed", "2")  # the default temperature (0.7), with a seed that gives a tidy list
        chat("Give me three tips for writing clear documentation.")
        tab.fill("#chat-schema", json.dumps(TIP_SCHEMA, indent=1))  # the second reply: structured output
        chat("Which one matters most? Answer as JSON.")
        # A viewport as tall as the conversation, not full_page: that would draw the sticky composer mid-page.
        height = tab.evaluate("document.documentElement.scrollHeight")
        tab.set_viewport_size({"width": 1280, "height": min(height, 1600)})
        tab.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
        tab.screenshot(path=str(out / "chat.png"))
        written.append(out / "chat.png")
        tab.set_viewport_size({"width": 1280, "height": 800})

        tab.goto(f"{url}/ui#embeddings")
        tab.click("#embed-form button[type=submit]")
        tab.wait_for_selector("table.heatmap")
        save("embeddings")

        tab.goto(f"{url}/ui#tasks")
        for form in ("cls", "zs", "qa", "rerank"):  # rerank: all-minilm-l6-v2, by cosine
            tab.click(f"#{form}-form button[type=submit]")
            tab.wait_for_selector(f"#{form}-result > *")
        save("tasks", full_page=True)

        tab.goto(f"{url}/ui#models")
        tab.wait_for_selector("#models-list table")
        save("models")
        tab.goto(f"{url}/ui#models/all-minilm-l6-v2")
        tab.wait_for_selector(".graph svg")
        save("model", full_page=True)

        stop = threading.Event()
        load = threading.Thread(target=traffic, args=(url, stop), daemon=True)
        load.start()
        tab.goto(f"{url}/ui#server")
        time.sleep(30)  # fifteen refreshes of the charts
        save("server")
        stop.set()
        load.join()

        tab = context.new_page()  # a phone's width from the start, as a phone would load it
        tab.set_viewport_size({"width": 390, "height": 844})
        tab.goto(f"{url}/ui#chat")
        tab.wait_for_selector("#chat-model option", state="attached")
        tab.locator("#chat-seed").evaluate("e => { e.value = '5'; }")  # the settings are folded on a phone
        chat("What is the capital of France?")
        save("phone")
        context.close()
    return written


def shoot_key_dialog(out: Path, profile: Path, models: list[ModelSpec]) -> Path:
    from playwright.sync_api import sync_playwright

    with Server(models, port=0, api_key="the-right-key") as server, sync_playwright() as p:
        context = launch(p, profile)
        tab = context.new_page()
        tab.goto(f"{server.url}/ui")
        tab.fill("#key-input", "a-wrong-key")
        tab.press("#key-input", "Enter")
        tab.wait_for_selector("#key-error:not([hidden])")
        path = out / "apikey.png"
        tab.screenshot(path=str(path))
        context.close()
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "img")
    args = parser.parse_args()
    cache = Cache(default_home())
    found = {name: cache.get(name) for name in DEFAULTS}
    missing = [name for name, entry in found.items() if entry is None]
    if missing:
        sys.exit(f"missing default models {missing}: run `onnxkit pull` (or `make models`) first")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="onnxkit-screens-") as tmp:
        root = Path(tmp)
        models = [ModelSpec(name, entry.path) for name, entry in found.items() if entry is not None]
        models += random_task_models(root / "tasks")
        with Server(models, port=0) as server:
            written = shoot(server.url, args.out, root / "profile")
        written.append(shoot_key_dialog(args.out, root / "profile-key", models[1:2]))
    for path in written:
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
