"""Structured output over HTTP: response_format, guided_choice and grammars, with the openai SDK."""

from __future__ import annotations

import asyncio
import json
import random
import re
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from onnxkit.serve.server import Server

MSG = [{"role": "user", "content": "Describe a city as JSON."}]


class City(BaseModel):
    name: str = Field(max_length=12)
    population: int = Field(ge=0, le=10_000_000)
    capital: bool


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_sdk_parse_returns_the_pydantic_object(client: openai.OpenAI) -> None:
    r = client.chat.completions.parse(model="tiny-chat", messages=MSG, response_format=City, max_tokens=200,
                                      temperature=0.7)  # fmt: skip
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, City), r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"


def test_json_object_and_schema_streamed(client: openai.OpenAI) -> None:
    schema = City.model_json_schema()
    chunks = client.chat.completions.create(
        model="tiny-chat", messages=MSG, max_tokens=200, temperature=0.7, stream=True,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    jsonschema.validate(json.loads(text), schema)
    # json_object leaves keys free, so a random model may fill its budget: every choice that ends by
    # itself parses, one cut short used all of max_tokens, and at least one ends by itself.
    r = client.chat.completions.create(model="tiny-chat", messages=MSG, max_tokens=300, temperature=0.7, n=4,
                                       seed=1, response_format={"type": "json_object"})  # fmt: skip
    ended = [c for c in r.choices if c.finish_reason == "stop"]
    assert ended and r.usage is not None
    for c in ended:
        assert isinstance(json.loads(c.message.content or ""), dict), c.message.content
    cut = len(r.choices) - len(ended)
    assert all(c.finish_reason in ("stop", "length") for c in r.choices)
    assert r.usage.completion_tokens >= 300 * cut


def test_completions_regex_choice_and_grammar(client: openai.OpenAI) -> None:
    code = {"response_format": {"type": "regex", "regex": "[A-Z]{2}-[0-9]{3}"}}
    regex = client.completions.create(model="tiny-chat", prompt="Code:", max_tokens=20, extra_body=code)
    assert re.fullmatch(r"[A-Z]{2}-[0-9]{3}", regex.choices[0].text)
    choice = client.chat.completions.create(model="tiny-chat", messages=MSG, max_tokens=10,
                                            extra_body={"guided_choice": ["north", "south"]})  # fmt: skip
    assert choice.choices[0].message.content in ("north", "south")
    lark = 'start: "(" NUM ("," NUM)* ")"\nNUM: /[0-9]/'
    tuple_format = {"response_format": {"type": "grammar", "grammar": lark}}
    grammar = client.completions.create(model="tiny-chat", prompt="Tuple:", max_tokens=30, stream=True,
                                        extra_body=tuple_format)  # fmt: skip
    text = "".join(c.choices[0].text for c in grammar if c.choices)
    assert re.fullmatch(r"\([0-9](,[0-9])*\)", text), text


def test_bad_grammar_is_400_streamed_or_not(client: openai.OpenAI) -> None:
    bad = {"type": "regex", "regex": "(unclosed"}
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError, match="grammar did not compile"):
            client.chat.completions.create(model="tiny-chat", messages=MSG, max_tokens=5, stream=stream,
                                           extra_body={"response_format": bad})  # fmt: skip
    with pytest.raises(openai.BadRequestError, match="expected one of text, json_object"):
        client.chat.completions.create(model="tiny-chat", messages=MSG, response_format={"type": "yaml"})  # type: ignore[arg-type,typeddict-item]


# ---- 50 random JSON schemas, each answered with output that validates ---------------------------------


def random_schema(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """A schema whose every value is bounded (strings, arrays, numbers), so output must end."""
    kinds = ["string", "integer", "boolean", "enum", "null"] + (["object", "array"] if depth < 2 else [])
    kind = rng.choice(kinds)
    if kind == "string":
        return {"type": "string", "maxLength": rng.randint(0, 6)}
    if kind == "integer":
        low = rng.randint(-50, 50)
        return {"type": "integer", "minimum": low, "maximum": low + rng.randint(0, 500)}
    if kind == "enum":
        return {"enum": rng.sample(["red", "green", "blue", 1, 2.5, True, None], rng.randint(1, 4))}
    if kind == "array":
        low = rng.randint(0, 2)
        return {"type": "array", "items": random_schema(rng, depth + 1), "minItems": low,
                "maxItems": low + rng.randint(0, 2)}  # fmt: skip
    if kind == "object":
        names = rng.sample(["id", "name", "tags", "size", "ok", "meta", "kind"], rng.randint(1, 4))
        props = {n: random_schema(rng, depth + 1) for n in names}
        return {"type": "object", "properties": props, "required": rng.sample(names, rng.randint(0, len(names)))}
    return {"type": kind}


async def test_fifty_random_schemas_give_valid_output(server: Server) -> None:
    rng = random.Random(12)
    schemas = [{"type": "object", "properties": {"value": random_schema(rng)}, "required": ["value"]}
               for _ in range(50)]  # fmt: skip
    limit = asyncio.Semaphore(8)

    async def ask(http: httpx.AsyncClient, i: int, schema: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
        spec = {"name": f"s{i}", "schema": schema, "strict": i % 2 == 0}
        body = {"model": "tiny-chat", "messages": MSG, "max_tokens": 600, "temperature": 1.0, "seed": i,
                "response_format": {"type": "json_schema", "json_schema": spec}}  # fmt: skip
        async with limit:
            r = await http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        return schema, choice["message"]["content"], choice["finish_reason"]

    async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
        answers = await asyncio.gather(*(ask(http, i, s) for i, s in enumerate(schemas)))
    for schema, text, finish in answers:
        assert finish == "stop", (schema, text)
        jsonschema.validate(json.loads(text), schema)
