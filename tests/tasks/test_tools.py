"""Tool calls (tasks.tools): parsing the request, the prompt, the grammar and the parse of the output."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from onnxkit.errors import InvalidRequest
from onnxkit.runtime.genai import Guidance
from onnxkit.runtime.metrics import Metrics
from onnxkit.settings import ServerSettings
from onnxkit.tasks import tools
from onnxkit.tasks.chat import ChatModel
from onnxkit.tasks.guidance import Constraint
from onnxkit.tasks.messages import chat_template

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16},
                                                        "unit": {"enum": ["celsius", "fahrenheit"]}},
                       "required": ["city", "unit"]},
    },
}  # fmt: skip
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                                        "b": {"type": "integer", "minimum": 0, "maximum": 99}},
                       "required": ["a", "b"]},
    },
}  # fmt: skip
SCHEMAS = {"get_weather": WEATHER["function"]["parameters"], "add": ADD["function"]["parameters"]}


def streamed(text: str, step: int) -> tuple[tools.CallParser, list[tools.CallEvent]]:
    parser, events = tools.CallParser(), []
    for i in range(0, len(text), step):
        events += parser.feed(text[i : i + step])
    return parser, events


def assemble(events: list[tools.CallEvent]) -> tuple[str, list[tuple[str, str]]]:
    """What a streaming client rebuilds from the events (as the openai SDK does from tool_calls deltas)."""
    content, calls = "", {}  # type: ignore[var-annotated]
    for e in events:
        if e.index < 0:
            content += e.text
            continue
        name, args = calls.get(e.index, ("", ""))
        calls[e.index] = (name + e.name, args + e.arguments)
    return content, [calls[i] for i in sorted(calls)]


@pytest.mark.parametrize("step", [1, 2, 5, 1000])
def test_parser_streams_calls_and_drops_a_repeat(step: int) -> None:
    a = tools.call_block("get_weather", {"city": "Paris", "unit": "celsius"})
    b = tools.call_block("add", {"a": 1, "b": 2})
    parser, events = streamed("\n".join([a, b, a, "<tool_call>\n{\"name\": \"add\""]), step)
    assert parser.repeated
    assert assemble(events) == ("", [("get_weather", '{"city": "Paris", "unit": "celsius"}'),
                                     ("add", '{"a": 1, "b": 2}')])  # fmt: skip
    content, calls = parser.finish()
    assert content is None and [c.name for c in calls] == ["get_weather", "add"]
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)


def test_parser_holds_back_only_what_could_be_a_call() -> None:
    parser = tools.CallParser()
    assert parser.feed(" <tool") == []  # may still become a call
    assert [e.text for e in parser.feed("box> is text")] == [" <toolbox> is text"]
    assert parser.finish() == (" <toolbox> is text", [])
    undecided = tools.CallParser()
    undecided.feed("\n\n")
    assert undecided.pending_text() == "\n\n" and undecided.finish() == ("\n\n", [])


def test_parser_call_cut_short_is_text_when_nothing_completed() -> None:
    parser, _ = streamed('<tool_call>\n{"name": "add", "arguments": {"a": 1', 3)
    content, calls = parser.finish()
    assert calls == [] and content is not None and content.startswith("<tool_call>")


@pytest.mark.parametrize(
    ("tool_list", "choice", "fragment"),
    [
        ([], "auto", "tools is empty"),
        ([{"type": "retrieval"}], "auto", 'must be {"type": "function"'),
        ([{"type": "function", "function": {"name": "bad name"}}], "auto", "letters, digits"),
        ([WEATHER, WEATHER], "auto", "names must be unique"),
        ([WEATHER], "sometimes", 'expected "auto", "none", "required"'),
        ([WEATHER], {"type": "function", "function": {"name": "add"}}, "not among the tools"),
        (None, "required", "no tools were sent"),
    ],
)
def test_bad_tools_named(tool_list: Any, choice: Any, fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=fragment.replace("(", r"\(").replace("{", r"\{")):
        tools.parse_tools(tool_list, choice, None)


def test_fallback_rendering_of_calls_and_results() -> None:
    use = tools.parse_tools([WEATHER], "auto", None)
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]  # fmt: skip
    rendered, declared = tools.render(messages, use, template_knows_tools=False)
    assert declared is None and rendered[0]["role"] == "system" and '"get_weather"' in rendered[0]["content"]
    assert rendered[2] == {"role": "assistant", "content": tools.call_block("get_weather", {"city": "Paris"})}
    assert rendered[3] == {"role": "user", "content": "<tool_response>\nsunny\n</tool_response>"}
    native, declared = tools.render(messages, use, template_knows_tools=True)
    assert declared == [WEATHER]
    assert native[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}  # an object for `| tojson`
    none = tools.parse_tools([WEATHER], "none", None)
    assert tools.render(messages[:1], none, template_knows_tools=False)[0] == messages[:1]


def test_pydantic_style_refs_are_lifted_to_the_root() -> None:
    params = {"$defs": {"Unit": {"enum": ["c", "f"]}}, "type": "object",
              "properties": {"unit": {"$ref": "#/$defs/Unit"}}, "required": ["unit"]}  # fmt: skip
    tool = tools.Tool("t", "", params)
    schema = tools.call_schema(tool)
    assert schema["$defs"] == {"Unit": {"enum": ["c", "f"]}}
    assert schema["properties"]["arguments"]["properties"]["unit"] == {"$ref": "#/$defs/Unit"}
    jsonschema.validate({"name": "t", "arguments": {"unit": "c"}}, schema)


async def calls_from(model: ChatModel, use: tools.ToolUse, content: str, max_tokens: int = 160,
                     answer: Constraint | None = None) -> tuple[str | None, list[tools.ToolCall]]:  # fmt: skip
    prompt = await model.chat_prompt([{"role": "user", "content": content}], use)
    s = model.sampling(prompt, max_tokens=max_tokens, temperature=None, top_p=None, top_k=None, seed=None,
                       guidance=Guidance("lark_grammar", tools.grammar(use, answer)))  # fmt: skip
    parser = tools.CallParser()
    async for _, piece in model.generate([(prompt, s)], (), enough=lambda i: parser.repeated):
        parser.feed(piece.text)
    return parser.finish()


def check_calls(calls: list[tools.ToolCall]) -> None:
    for call in calls:
        jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])


async def test_required_and_named_give_valid_calls_from_a_random_model(tiny_chat: ChatModel) -> None:
    required = tools.parse_tools([WEATHER, ADD], "required", False)
    content, calls = await calls_from(tiny_chat, required, "Weather in Paris?")
    assert content is None and len(calls) == 1
    check_calls(calls)
    named = tools.parse_tools([WEATHER, ADD], {"type": "function", "function": {"name": "add"}}, True)
    content, calls = await calls_from(tiny_chat, named, "Add 2 and 3.", max_tokens=400)
    assert content is None and calls and {c.name for c in calls} == {"add"}
    check_calls(calls)


async def test_auto_answers_text_or_calls(tiny_chat: ChatModel) -> None:
    auto = tools.parse_tools([WEATHER, ADD], "auto", None)
    content, calls = await calls_from(tiny_chat, auto, "Hello", max_tokens=24)
    assert (content is None) != (calls == [])
    check_calls(calls)
    # With a response_format, the text alternative is that format.
    answer = Constraint(choices=("yes", "no"))
    content, calls = await calls_from(tiny_chat, auto, "Hello", max_tokens=200, answer=answer)
    assert content in ("yes", "no") or (content is None and calls)


def test_templates_that_know_tools_are_told_apart(tiny_chat: ChatModel) -> None:
    assert "tools" not in chat_template(tiny_chat.path) and not tiny_chat.template_knows_tools


# A template that renders tools, calls and results itself (written for this test). onnxruntime-genai
# hands a template each tool as its function object ({name, description, parameters}).
TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTOOLS:{% for t in tools %} {{ t.name }}{% endfor %}<|im_end|>\n"
    "{% endif %}{% for m in messages %}{% if m.role == 'tool' %}<|im_start|>user\nRESULT {{ m.content }}"
    "<|im_end|>\n{% elif m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant\n"
    "{% for c in m.tool_calls %}CALL {{ c.function.name }} {{ c.function.arguments.city }}{% endfor %}"
    "<|im_end|>\n{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tool_aware_chat(tiny_chat_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatModel]:
    folder = tmp_path_factory.mktemp("tool-aware") / "chat"
    shutil.copytree(tiny_chat_model, folder)
    (folder / "chat_template.jinja").write_text(TOOL_TEMPLATE)
    model = ChatModel("aware", "1", folder, ServerSettings(), Metrics().recorder("aware", "1"))
    yield model
    asyncio.run(model.close())


async def test_a_template_that_knows_tools_renders_them_itself(tool_aware_chat: ChatModel) -> None:
    assert tool_aware_chat.template_knows_tools
    use = tools.parse_tools([WEATHER, ADD], "auto", None)
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]  # fmt: skip
    ids = await tool_aware_chat.chat_prompt(messages, use)
    text = tool_aware_chat.token_bytes.tokenizer.decode(ids, skip_special_tokens=False)  # type: ignore[union-attr]
    # the template's own words: tools listed, the call's arguments an object (it reads ['city']), the result
    assert "TOOLS: get_weather add" in text and "CALL get_weather Paris" in text and "RESULT sunny" in text
    assert "<tool_call>" not in text and "<tool_response>" not in text  # no fallback


@pytest.mark.integration
async def test_smollm2_required_call_validates(smollm: ChatModel) -> None:
    use = tools.parse_tools([WEATHER, ADD], "required", None)
    content, calls = await calls_from(smollm, use, "What is the weather like in Paris?")
    assert content is None and calls
    assert calls[0].name == "get_weather" and json.loads(calls[0].arguments)["city"] == "Paris"
    check_calls(calls)
