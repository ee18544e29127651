"""The real default models, served the way `make run` serves them."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import openai
import pytest

from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import Server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real(default_model: Callable[[str], Path]) -> Iterator[Server]:
    models = [ModelSpec(n, default_model(n)) for n in ("smollm2-135m-instruct", "all-minilm-l6-v2")]
    with Server(models, port=0) as s:
        yield s


@pytest.fixture(scope="module")
def client(real: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=real.url + "/v1", api_key="unused", max_retries=0)


def test_greedy_capital_of_france(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_tokens=40,
    )
    assert "Paris" in (r.choices[0].message.content or "")


def test_generation_ends_at_end_of_turn(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": "Say hello."}], temperature=0,
        max_tokens=200,
    )
    assert r.choices[0].finish_reason == "stop"  # <|im_end|>, well before the token limit
    assert r.usage is not None and r.usage.completion_tokens < 200
    assert "<|im_end|>" not in (r.choices[0].message.content or "")


def test_paraphrases_embed_closer_than_unrelated(client: openai.OpenAI) -> None:
    texts = [
        "A man is playing a guitar.",
        "Someone is strumming a guitar.",
        "The stock market fell sharply on Monday.",
    ]
    data = client.embeddings.create(model="all-minilm-l6-v2", input=texts).data
    v = np.array([d.embedding for d in data])
    assert v.shape == (3, 384)
    assert v[0] @ v[1] > 0.6 > v[0] @ v[2] + 0.3


def test_seed_curl_request(real: Server) -> None:
    """The seed project's documented request, unchanged (no model field), through curl."""
    body = ('{"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user",'
            '"content":"Explain quantum computing in one sentence."}],"temperature":0.7}')
    out = subprocess.run(
        ["curl", "-s", "-X", "POST", real.url + "/v1/chat/completions", "-H", "Content-Type: application/json",
         "-d", body], capture_output=True, text=True, timeout=300, check=True).stdout
    reply = json.loads(out)
    assert reply["object"] == "chat.completion"
    assert reply["model"] == "smollm2-135m-instruct"
    text = reply["choices"][0]["message"]["content"]
    assert len(text.split()) >= 5, text
    assert reply["choices"][0]["finish_reason"] in ("stop", "length")
    assert reply["usage"]["completion_tokens"] > 0
