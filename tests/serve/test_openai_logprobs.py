"""Logprobs over HTTP with the openai SDK: chat (whole and streamed) and completions."""

from __future__ import annotations

import math

import openai
import pytest

from onnxkit.serve.server import Server

MSG = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_chat_logprobs_come_back(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="tiny-chat", messages=MSG, max_tokens=8, temperature=0,
                                       logprobs=True, top_logprobs=3)  # fmt: skip
    choice = r.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    content = choice.logprobs.content
    assert r.usage is not None and len(content) == r.usage.completion_tokens
    assert bytes(b for t in content for b in (t.bytes or [])) == (choice.message.content or "").encode()
    for token in content:
        assert token.logprob <= 0 and len(token.top_logprobs) == 3
        assert token.top_logprobs[0].logprob == pytest.approx(token.logprob)  # greedy: it was the best
        assert sum(math.exp(t.logprob) for t in token.top_logprobs) <= 1 + 1e-5


def test_streamed_logprobs_and_same_text_with_the_same_seed(client: openai.OpenAI) -> None:
    kw = {"model": "tiny-chat", "messages": MSG, "max_tokens": 16, "temperature": 0.9, "seed": 5}
    plain = client.chat.completions.create(**kw)  # type: ignore[call-overload]
    chunks = list(client.chat.completions.create(**kw, logprobs=True, top_logprobs=2, stream=True))  # type: ignore[call-overload]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    tokens = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content or []]
    assert plain.usage is not None and len(tokens) == plain.usage.completion_tokens


def test_completions_logprobs(client: openai.OpenAI) -> None:
    r = client.completions.create(model="tiny-chat", prompt="Once upon a time", max_tokens=6, temperature=0,
                                  logprobs=2)  # fmt: skip
    lp = r.choices[0].logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert all(len(top) <= 2 for top in lp.top_logprobs)
    assert lp.text_offset[0] == 0
    with pytest.raises(openai.BadRequestError, match="prompt's logprobs"):
        client.completions.create(model="tiny-chat", prompt="x", max_tokens=2, logprobs=1, echo=True)


def test_logprob_bounds_are_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        client.chat.completions.create(model="tiny-chat", messages=MSG, logprobs=True, top_logprobs=21)
    with pytest.raises(openai.BadRequestError, match="top_logprobs needs logprobs"):
        client.chat.completions.create(model="tiny-chat", messages=MSG, top_logprobs=2)
