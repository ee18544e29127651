"""Constrained decoding (tasks.guidance) on the tiny random model and on SmolLM2, in-process."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
from tasks_helpers import run

from onnxkit.errors import InvalidRequest
from onnxkit.tasks import guidance
from onnxkit.tasks.chat import ChatModel

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0,
                                                                       "maximum": 120}},
    "required": ["name", "age"],
}  # fmt: skip


def constraint(response_format: dict[str, Any] | None = None, choice: list[str] | None = None) -> guidance.Constraint:
    c = guidance.from_request(response_format, choice)
    assert c is not None
    return c


def json_schema(schema: dict[str, Any], strict: bool = False) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": strict}}


def test_schema_objects_closed_and_layout_compact() -> None:
    prepared = guidance.prepare_schema(
        {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}},
                                          "free": {"type": "object"}}},
        strict=False,
    )  # fmt: skip
    assert prepared["additionalProperties"] is False
    assert prepared["properties"]["a"]["additionalProperties"] is False
    assert "additionalProperties" not in prepared["properties"]["free"]  # a free-form object stays free
    assert prepared["x-guidance"]["whitespace_flexible"] is False
    strict = guidance.prepare_schema({"type": "object", "properties": {"free": {"type": "object"}}}, strict=True)
    assert strict["properties"]["free"]["additionalProperties"] is False
    explicit = guidance.prepare_schema({"type": "object", "properties": {}, "additionalProperties": True}, strict=True)
    assert explicit["additionalProperties"] is True  # the schema's own word wins


@pytest.mark.parametrize(
    ("response_format", "choice", "fragment"),
    [
        ({"type": "xml"}, None, "expected one of text, json_object"),
        ({"type": "json_schema"}, None, '"json_schema": {"name"'),
        (json_schema([]), None, "expected a JSON schema object"),  # type: ignore[arg-type]
        ({"type": "regex"}, None, '"regex": a non-empty string'),
        (None, [], "non-empty list"),
        ({"type": "json_object"}, ["a"], "not both"),
    ],
)
def test_bad_response_format_named(response_format: Any, choice: Any, fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(fragment)):
        guidance.from_request(response_format, choice)


def test_numbers_get_sixteen_digits_unless_bounded() -> None:
    prepared = guidance.prepare_schema(
        {"type": "object", "properties": {"n": {"type": "integer"}, "x": {"type": "number", "minimum": 0},
                                          "k": {"type": "integer", "exclusiveMaximum": 10}}},
        strict=False,
    )["properties"]  # fmt: skip
    assert (prepared["n"]["minimum"], prepared["n"]["maximum"]) == (-(10**16 - 1), 10**16 - 1)
    assert (prepared["x"]["minimum"], prepared["x"]["maximum"]) == (0, 1e16)
    assert "maximum" not in prepared["k"] and prepared["k"]["minimum"] == -(10**16 - 1)


def test_text_is_no_constraint() -> None:
    assert guidance.from_request({"type": "text"}, None) is None
    assert guidance.from_request(None, None) is None


async def test_json_schema_output_validates(tiny_chat: ChatModel) -> None:
    prompt = await tiny_chat.chat_prompt([{"role": "user", "content": "A person, as JSON."}])
    for strict in (False, True):
        c = constraint(json_schema(PERSON, strict))
        s = tiny_chat.sampling(prompt, max_tokens=64, temperature=0.8, top_p=None, top_k=None, seed=None,
                               guidance=c.guidance())  # fmt: skip
        out = await run(tiny_chat, prompt, s)
        assert out.finish == "stop", out.text
        jsonschema.validate(json.loads(out.text), PERSON)
        assert "\n" not in out.text  # the compact layout: no free whitespace


async def test_json_object_regex_choice_and_grammar(tiny_chat: ChatModel) -> None:
    prompt = await tiny_chat.text_prompt("Answer:")
    cases = [
        (constraint({"type": "json_object", }), lambda t: isinstance(json.loads(t), dict)),
        (constraint({"type": "regex", "regex": "[0-9]{3}-[a-z]{2}"}), lambda t: re.fullmatch(r"[0-9]{3}-[a-z]{2}", t)),
        (constraint(choice=["yes", "no", "maybe so"]), lambda t: t in ("yes", "no", "maybe so")),
        (constraint({"type": "grammar", "grammar": 'start: "(" NUM ("+" NUM)* ")"\nNUM: /[1-9]/'}),
         lambda t: re.fullmatch(r"\([1-9](\+[1-9])*\)", t)),
    ]  # fmt: skip
    for c, ok in cases:
        s = tiny_chat.sampling(prompt, max_tokens=48, temperature=1.0, top_p=None, top_k=None, seed=None,
                               guidance=c.guidance())  # fmt: skip
        out = await run(tiny_chat, prompt, s)
        if c.schema is not None and out.finish == "length":
            continue  # a free-form object may run past 48 tokens; the schema tests cover completion
        assert out.finish == "stop" and ok(out.text), (c, out.text)


async def test_constrained_seeded_and_logprobs_run_on_their_own_generator(tiny_chat: ChatModel) -> None:
    prompt = await tiny_chat.text_prompt("Answer:")
    c = constraint(choice=["alpha", "beta", "gamma"])
    s = tiny_chat.sampling(prompt, max_tokens=8, temperature=1.0, top_p=None, top_k=None, seed=7, logprobs=2,
                           guidance=c.guidance())  # fmt: skip
    out = await run(tiny_chat, prompt, s)
    assert out.text in ("alpha", "beta", "gamma") and out.logprobs


async def test_grammar_that_does_not_compile_is_a_400_before_output(tiny_chat: ChatModel) -> None:
    prompt = await tiny_chat.text_prompt("Answer:")
    for c in (constraint({"type": "regex", "regex": "(unclosed"}),
              constraint(json_schema({"type": "string", "format": "no-such-format"}))):  # fmt: skip
        for seed in (None, 3):  # the engine's batch, and an own generator
            s = tiny_chat.sampling(prompt, max_tokens=8, temperature=1.0, top_p=None, top_k=None, seed=seed,
                                   guidance=c.guidance())  # fmt: skip
            with pytest.raises(InvalidRequest, match="grammar did not compile"):
                await run(tiny_chat, prompt, s)
    # and the engine goes on serving
    s = tiny_chat.sampling(prompt, max_tokens=4, temperature=0, top_p=None, top_k=None, seed=None)
    assert (await run(tiny_chat, prompt, s)).completion_tokens > 0


def test_guidance_probe_found_llguidance(tiny_chat: ChatModel) -> None:
    # The PyPI wheel has llguidance; a build without it would answer 400 (see require_guidance).
    assert tiny_chat.guidance_error == ""
    tiny_chat.require_guidance("response_format")


@pytest.mark.integration
async def test_smollm2_five_field_schema(smollm: ChatModel) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"}, "age": {"type": "integer"}, "city": {"type": "string"},
            "email": {"type": "string"}, "member": {"type": "boolean"},
        },
        "required": ["name", "age", "city", "email", "member"],
    }  # fmt: skip
    prompt = await smollm.chat_prompt([{"role": "user", "content": "Invent a customer record as JSON."}])
    s = smollm.sampling(prompt, max_tokens=120, temperature=None, top_p=None, top_k=None, seed=None,
                        guidance=constraint(json_schema(schema, strict=True)).guidance())  # fmt: skip
    out = await run(smollm, prompt, s)
    assert out.finish == "stop", out.text
    jsonschema.validate(json.loads(out.text), schema)
