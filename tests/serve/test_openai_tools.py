"""Tool calls over HTTP with the openai SDK: whole and streamed, follow-up turns, tool_choice."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from onnxkit.serve.server import Server

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                        "unit": {"enum": ["celsius", "fahrenheit"]}},
                       "required": ["city", "unit"]},
    },
}  # fmt: skip


class Add(BaseModel):
    """Add two small numbers."""

    a: int = Field(ge=0, le=9)
    b: int = Field(ge=0, le=9)


ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def schemas() -> dict[str, Any]:
    return {"get_weather": WEATHER["function"]["parameters"], "Add": Add.model_json_schema()}  # type: ignore[index]


def check(calls: Any) -> None:
    assert calls
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), schemas()[call.function.name])


def test_required_call_whole(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="tiny-chat", messages=ASK, tools=[WEATHER], tool_choice="required",  # type: ignore[list-item]
                                       max_tokens=300)  # fmt: skip
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    check(choice.message.tool_calls)


def test_named_strict_pydantic_tool_streamed_through_the_sdk_helper(client: openai.OpenAI) -> None:
    tools = [openai.pydantic_function_tool(Add), WEATHER]
    with client.chat.completions.stream(
        model="tiny-chat", messages=[{"role": "user", "content": "Add 2 and 3."}], tools=tools,  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "Add"}}, max_tokens=300,
    ) as stream:  # fmt: skip
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    check(choice.message.tool_calls)
    assert all(isinstance(c.function.parsed_arguments, Add) for c in choice.message.tool_calls or [])


def test_stream_sends_openai_tool_call_deltas(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="tiny-chat", messages=ASK, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False,  # type: ignore[list-item]
        max_tokens=300, stream=True,
    ))  # fmt: skip
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    first = deltas[0][0]
    assert first.index == 0 and first.id and first.type == "function" and first.function.name == "get_weather"
    assert all(d[0].id is None and d[0].function.name is None for d in deltas[1:])
    arguments = "".join(d[0].function.arguments or "" for d in deltas)
    jsonschema.validate(json.loads(arguments), schemas()["get_weather"])
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_parallel_false_gives_one_call(client: openai.OpenAI) -> None:
    offered = [WEATHER, openai.pydantic_function_tool(Add)]
    r = client.chat.completions.create(model="tiny-chat", messages=ASK, tools=offered, tool_choice="required",  # type: ignore[arg-type]
                                       parallel_tool_calls=False, max_tokens=300, temperature=1.0, seed=3)  # fmt: skip
    assert len(r.choices[0].message.tool_calls or []) == 1


def test_follow_up_turn_with_tool_results(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="tiny-chat", messages=ASK, tools=[WEATHER], tool_choice="required",  # type: ignore[list-item]
                                           max_tokens=300)  # fmt: skip
    message = first.choices[0].message
    history: list[Any] = [*ASK, message]  # the SDK's own message object, sent back as it came
    history += [{"role": "tool", "tool_call_id": c.id, "content": "sunny"} for c in message.tool_calls or []]
    answer = client.chat.completions.create(model="tiny-chat", messages=history, tools=[WEATHER], tool_choice="none",  # type: ignore[list-item]
                                            max_tokens=12)  # fmt: skip
    assert answer.choices[0].message.tool_calls is None
    assert answer.choices[0].finish_reason in ("stop", "length")
    # The call and its result are in the prompt (docs/openai.md shows the rendering; tokenize tests read it).
    alone = client.chat.completions.create(model="tiny-chat", messages=ASK, tools=[WEATHER], tool_choice="none",  # type: ignore[list-item]
                                           max_tokens=1)  # fmt: skip
    assert answer.usage is not None and alone.usage is not None
    assert answer.usage.prompt_tokens > alone.usage.prompt_tokens + 10


def test_auto_answers_content_or_calls(client: openai.OpenAI) -> None:
    for seed in range(3):
        r = client.chat.completions.create(model="tiny-chat", messages=ASK, tools=[WEATHER], max_tokens=40,  # type: ignore[list-item]
                                           temperature=1.0, seed=seed)  # fmt: skip
        message = r.choices[0].message
        if message.tool_calls:
            assert message.content is None
            check(message.tool_calls)
        else:
            assert message.content is not None


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "not among the tools"),
        ({"tool_choice": "required"}, "no tools were sent"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "letters, digits"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "no tool_call_id"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"id": "1", "type": "function",
                                                             "function": {"name": "f", "arguments": "{oops"}}]}]},
         "is not JSON"),
    ],
)  # fmt: skip
def test_bad_tool_requests_are_400(client: openai.OpenAI, extra: dict[str, Any], fragment: str) -> None:
    body: dict[str, Any] = {"model": "tiny-chat", "messages": ASK, "max_tokens": 4, **extra}
    with pytest.raises(openai.BadRequestError, match=fragment):
        client.chat.completions.create(**body)
