"""Chat and completions through the official openai SDK against a real server on loopback."""

from __future__ import annotations

import httpx
import openai
import pytest

from onnxkit.serve.server import Server

MSG = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def greedy(client: openai.OpenAI, n_tokens: int = 24) -> str:
    r = client.chat.completions.create(model="tiny-chat", messages=MSG, max_tokens=n_tokens, temperature=0)
    return r.choices[0].message.content or ""


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"tiny-chat", "tiny-embed"} <= ids
    m = client.models.retrieve("tiny-chat")
    assert m.id == "tiny-chat" and m.object == "model"
    # The same object carries TF-Serving's status, since both APIs share GET /v1/models/{m}.
    extra = m.model_extra or {}
    assert extra["model_version_status"][0]["state"] == "AVAILABLE"


def test_chat_greedy_is_deterministic_with_usage(client: openai.OpenAI) -> None:
    r1 = client.chat.completions.create(model="tiny-chat", messages=MSG, max_tokens=12, temperature=0)
    r2 = client.chat.completions.create(model="tiny-chat", messages=MSG, max_tokens=12, temperature=0)
    assert r1.choices[0].message.content == r2.choices[0].message.content
    assert r1.choices[0].message.role == "assistant"
    assert r1.choices[0].finish_reason in ("stop", "length")
    assert r1.usage is not None and r1.usage.prompt_tokens > 5
    if r1.choices[0].finish_reason == "length":
        assert r1.usage.completion_tokens == 12
    assert r1.usage.total_tokens == r1.usage.prompt_tokens + r1.usage.completion_tokens


def test_content_as_text_parts_equals_string(client: openai.OpenAI) -> None:
    parts = [{"role": "system", "content": [{"type": "text", "text": "You are terse."}]},
             {"role": "user", "content": [{"type": "text", "text": "Name a "}, {"type": "text", "text": "colour."}]}]
    r = client.chat.completions.create(model="tiny-chat", messages=parts, max_tokens=24, temperature=0)
    assert r.choices[0].message.content == greedy(client)


def test_stream_matches_non_stream_and_reports_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="tiny-chat", messages=MSG, max_tokens=24, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == greedy(client)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


def test_stream_ends_with_done(server: Server) -> None:
    body = {"model": "tiny-chat", "messages": MSG, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"


def test_n_choices_indexed(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="tiny-chat", messages=MSG, max_tokens=6, temperature=1.0, n=3)
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    chunks = list(client.chat.completions.create(
        model="tiny-chat", messages=MSG, max_tokens=6, temperature=1.0, n=2, stream=True))
    assert {c.choices[0].index for c in chunks if c.choices} == {0, 1}


def test_stop_string_cuts_and_finishes_with_stop(client: openai.OpenAI) -> None:
    full = greedy(client, 40)
    assert len(full) > 8, full
    stop = full[5:8]
    cut = full[: full.index(stop)]
    for stops in (stop, [stop, "never-appears-xyz"]):
        r = client.chat.completions.create(model="tiny-chat", messages=MSG, max_tokens=40, temperature=0, stop=stops)
        assert r.choices[0].message.content == cut
        assert r.choices[0].finish_reason == "stop"
    chunks = list(client.chat.completions.create(
        model="tiny-chat", messages=MSG, max_tokens=40, temperature=0, stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == cut


def test_seed_gives_same_sample_and_no_seed_varies(client: openai.OpenAI) -> None:
    def sample(**kw: object) -> str:
        r = client.chat.completions.create(
            model="tiny-chat", messages=MSG, max_tokens=16, temperature=1.0, top_p=0.95, extra_body={"top_k": 50}, **kw)
        return r.choices[0].message.content or ""

    assert sample(seed=1234) == sample(seed=1234)
    assert len({sample() for _ in range(4)}) > 1  # temperature > 0 really samples
    assert sample(seed=1) != sample(seed=2) or sample(seed=3) != sample(seed=1)


def test_max_tokens_clamped_to_context(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="tiny-chat", messages=MSG, max_tokens=100_000, temperature=0)
    assert r.usage is not None and r.usage.prompt_tokens + r.usage.completion_tokens <= 16384


def test_prompt_over_context_is_400_naming_both_numbers(client: openai.OpenAI) -> None:
    long = "Paris " * 20000
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": long}])
    message = str(err.value)
    assert "16384" in message and "context length" in message
    assert err.value.body["code"] == "context_length_exceeded"  # type: ignore[index]


def test_completions_string_list_and_stream(client: openai.OpenAI) -> None:
    r = client.completions.create(model="tiny-chat", prompt="The capital of France is", max_tokens=5, temperature=0)
    assert r.object == "text_completion" and r.choices[0].finish_reason in ("stop", "length")
    r2 = client.completions.create(model="tiny-chat", prompt=["One", "Two"], max_tokens=5, temperature=0, n=2)
    assert sorted(c.index for c in r2.choices) == [0, 1, 2, 3]
    assert r2.choices[0].text == r2.choices[1].text  # greedy: both choices of a prompt agree
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny-chat", prompt="The capital of France is", max_tokens=5, temperature=0, stream=True) if c.choices)
    assert streamed == r.choices[0].text


def test_embedding_model_on_chat_route_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="needs a chat model"):
        client.chat.completions.create(model="tiny-embed", messages=MSG)
