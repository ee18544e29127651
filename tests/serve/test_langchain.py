"""LangChain's ChatOpenAI against onnxkit: structured output and tool calls, as agent code uses them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema
import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import Server


class Person(BaseModel):
    """A person."""

    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=120)


class GetWeather(BaseModel):
    """Get the current weather in a city."""

    city: str = Field(max_length=20)


def chat(server: Server, model: str, **kw: object) -> ChatOpenAI:
    return ChatOpenAI(base_url=server.url + "/v1", api_key="unused", model=model, max_retries=0, **kw)  # type: ignore[arg-type]


def check_tool_call(message: AIMessage) -> None:
    assert message.tool_calls, message
    call = message.tool_calls[0]
    assert call["name"] == "GetWeather" and call["id"]
    jsonschema.validate(call["args"], GetWeather.model_json_schema())


def test_structured_output_and_tools_on_the_tiny_model(server: Server) -> None:
    llm = chat(server, "tiny-chat", temperature=0.7, max_tokens=200)
    person = llm.with_structured_output(Person).invoke("Invent a person.")
    assert isinstance(person, Person)
    message = llm.bind_tools([GetWeather], tool_choice="any").invoke("What is the weather in Paris?")
    assert isinstance(message, AIMessage)
    check_tool_call(message)
    # LangChain's streaming assembles the same call from the deltas
    chunks = list(llm.bind_tools([GetWeather], tool_choice="GetWeather").stream("Weather in Rome?"))
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c  # type: ignore[assignment]
    assert isinstance(merged, AIMessage) and merged.tool_calls
    jsonschema.validate(merged.tool_calls[0]["args"], GetWeather.model_json_schema())
    # a follow-up turn with the tool's answer
    answer = llm.invoke(["What is the weather in Paris?", message,
                         ToolMessage("sunny", tool_call_id=message.tool_calls[0]["id"])])  # fmt: skip
    assert isinstance(answer, AIMessage) and isinstance(answer.content, str)


@pytest.fixture(scope="module")
def smollm(default_model: Callable[[str], Path]) -> Iterator[Server]:
    with Server([ModelSpec("smollm2", default_model("smollm2-135m-instruct"))], port=0) as s:
        yield s


@pytest.mark.integration
def test_smollm2_structured_output_and_tool_call(smollm: Server) -> None:
    llm = chat(smollm, "smollm2", temperature=0, max_tokens=120)
    person = llm.with_structured_output(Person).invoke("Invent a person called Alice who is 30 years old.")
    assert isinstance(person, Person)
    message = llm.bind_tools([GetWeather], tool_choice="any").invoke("What is the weather like in Paris?")
    assert isinstance(message, AIMessage)
    check_tool_call(message)
