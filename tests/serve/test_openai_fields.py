"""Request fields: every one honoured or refused by name, except the documented ignorable ones."""

from __future__ import annotations

import httpx
import openai
import pytest

from onnxkit.serve.server import Server

MSG = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize(
    ("route", "field", "value"),
    [
        ("/v1/chat/completions", "logit_bias", {"50": 10}),
        ("/v1/chat/completions", "functions", [{"name": "f"}]),
        ("/v1/chat/completions", "modalities", ["text", "audio"]),
        ("/v1/chat/completions", "no_such_field", 1),
        ("/v1/completions", "suffix", "!"),
        ("/v1/completions", "best_of", 2),
        ("/v1/embeddings", "pooling", "cls"),
    ],
)
def test_unknown_fields_are_400_naming_them(server: Server, route: str, field: str, value: object) -> None:
    body: dict[str, object] = {"model": "tiny-embed" if "embeddings" in route else "tiny-chat", field: value}
    body.update({"input": "x"} if "embeddings" in route else {"prompt": "x"} if route.endswith("/completions")
                and "chat" not in route else {"messages": MSG})  # fmt: skip
    r = httpx.post(server.url + route, json=body, timeout=30)
    assert r.status_code == 400
    error = r.json()["error"]
    assert field in error["message"] and "leave it out" in error["message"] and error["param"] == field


def test_ignored_fields_are_accepted(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="tiny-chat", messages=MSG, max_tokens=2, user="u1",
                                       metadata={"k": "v"}, store=False, service_tier="auto")  # fmt: skip
    assert r.choices[0].message.content is not None


@pytest.mark.parametrize(("field", "value"), [("store", True), ("service_tier", "priority")])
def test_bookkeeping_fields_that_ask_for_something_are_400(client: openai.OpenAI, field: str, value: object) -> None:
    # store=true asks for the completion to be kept for retrieval, a tier for other processing: neither is done
    with pytest.raises(openai.BadRequestError, match=f"{field}=") as e:
        client.chat.completions.create(model="tiny-chat", messages=MSG, max_tokens=2, extra_body={field: value})  # type: ignore[call-overload]
    assert "leave " + field + " out" in str(e.value)


def test_penalties_are_honoured_and_bounded(client: openai.OpenAI) -> None:
    kw = {"model": "tiny-chat", "messages": MSG, "max_tokens": 30, "temperature": 0}
    plain = client.chat.completions.create(**kw).choices[0].message.content  # type: ignore[call-overload]
    penalised = client.chat.completions.create(**kw, presence_penalty=2.0).choices[0].message.content  # type: ignore[call-overload]
    repeated = client.chat.completions.create(**kw, extra_body={"repetition_penalty": 5.0}).choices[0].message.content  # type: ignore[call-overload]
    assert penalised != plain and repeated != plain
    with pytest.raises(openai.BadRequestError, match="frequency_penalty"):
        client.chat.completions.create(**kw, frequency_penalty=3.0)  # type: ignore[call-overload]
    with pytest.raises(openai.BadRequestError, match="repetition_penalty"):
        client.chat.completions.create(**kw, extra_body={"repetition_penalty": 0})  # type: ignore[call-overload]
