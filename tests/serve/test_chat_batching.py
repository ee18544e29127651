"""How concurrent chat requests share the engine's static batches (runtime/genai's gather window)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import openai

from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import Server

MSG = [{"role": "user", "content": "Count to ten."}]


def decode_steps(url: str, model: str) -> dict[str, float]:
    """Cumulative bucket counts of onnxkit_decode_batch_size for one model, by upper bound."""
    text = httpx.get(url + "/metrics").text
    out: dict[str, float] = {}
    for labels, value in re.findall(r"^onnxkit_decode_batch_size_bucket\{([^}]*)\} (\S+)$", text, re.M):
        if f'model="{model}"' in labels:
            out[re.search(r'le="([^"]+)"', labels).group(1)] = float(value)  # type: ignore[union-attr]
    return out


async def staggered(url: str, model: str, gap: float) -> None:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)

    async def one(k: int) -> None:
        await asyncio.sleep(k * gap)
        r = await client.chat.completions.create(model=model, messages=MSG, max_tokens=32, temperature=0)
        assert r.choices[0].finish_reason in ("stop", "length")

    async with client:
        await asyncio.gather(*(one(k) for k in range(4)))


Buckets = dict[str, float]


def run_four(tiny_chat_model: Path, name: str, gather_ms: float, gap: float) -> tuple[Buckets, Buckets]:
    with Server([ModelSpec(name, tiny_chat_model)], port=0, chat_gather_ms=gather_ms) as s:
        before = decode_steps(s.url, name)
        asyncio.run(staggered(s.url, name, gap))
        return before, decode_steps(s.url, name)


def test_a_burst_shares_one_static_batch(tiny_chat_model: Path) -> None:
    # Four identical greedy requests 5 ms apart: gathered into one batch, every step advances all four.
    before, after = run_four(tiny_chat_model, "tiny-chat-gather", gather_ms=50, gap=0.005)
    assert after["+Inf"] - before.get("+Inf", 0) > 0
    assert after["3.0"] - before.get("3.0", 0) == 0, after


def test_gather_zero_starts_a_lone_request_at_once(tiny_chat_model: Path) -> None:
    # Without the window the first request starts alone; the others wait for its static batch to end.
    before, after = run_four(tiny_chat_model, "tiny-chat-now", gather_ms=0, gap=0.02)
    assert after["1.0"] - before.get("1.0", 0) > 0, after
