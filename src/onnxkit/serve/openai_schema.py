"""OpenAI request bodies (pydantic).

A field onnxkit does not honour is refused with a 400 naming it, never ignored: the client would
otherwise get an answer that silently differs from what it asked for. The exceptions are the
fields in ``IGNORED``, which do not change what a model answers (bookkeeping such as ``user`` or
``metadata``) and which the OpenAI SDK and LangChain send; docs/openai.md lists them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

# Accepted and ignored: they change nothing in the answer. (OpenAI's own server keeps them for
# its dashboards, caching and billing.)
IGNORED = frozenset({"user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"})
# Of those, two ask for something when set: storing the completion for later retrieval, and a
# processing tier. onnxkit does neither, so only the values that ask for nothing pass.
_ASKS_NOTHING: dict[str, tuple[object, ...]] = {"store": (None, False), "service_tier": (None, "auto", "default")}


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _drop_ignored(cls, data: Any) -> Any:
        if not (isinstance(data, dict) and IGNORED & data.keys()):
            return data
        for key, allowed in _ASKS_NOTHING.items():
            if key in data and not any(data[key] is a or (a is not None and data[key] == a) for a in allowed):
                raise ValueError(
                    f"{key}={data[key]!r} is not honoured here (onnxkit stores no completions and has one "
                    f"processing tier); leave {key} out, or send one of {[a for a in allowed if a is not None]}"
                )
        return {k: v for k, v in data.items() if k not in IGNORED}


class StreamOptions(_Request):
    include_usage: bool = False


class Sampled(_Request):
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    min_tokens: int | None = Field(default=None, ge=0, description="vLLM's extension: no end of turn before this")
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(
        default=None, ge=-1, le=2**31 - 1, description="0 or -1 disables top-k (vLLM's extension)"
    )
    n: int = Field(default=1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(
        default=None, gt=0.0, description="onnxruntime-genai's multiplicative penalty (llama.cpp's, vLLM's)"
    )
    response_format: dict[str, Any] | None = Field(
        default=None, description='json_object, json_schema, and onnxkit\'s "regex" and "grammar" (Lark)'
    )
    guided_choice: list[str] | None = Field(default=None, description="vLLM's extension: the answer is one of these")

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def top_k_or_none(self) -> int | None:
        return self.top_k if self.top_k and self.top_k > 0 else None


class FunctionCall(_Request):
    name: str
    arguments: str | dict[str, Any]


class ToolCall(_Request):
    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Request):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: None = None  # the SDK's assistant messages carry it; onnxkit never refuses, so always null


class ChatRequest(Sampled):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> ChatRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def logprob_count(self) -> int | None:
        """None: no logprobs; k: each token's logprob with its k most likely alternatives."""
        if not self.logprobs:
            return None
        return self.top_logprobs or 0


class CompletionRequest(Sampled):
    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=20)


INPUT_FORMS = (
    "input must be a string, a list of strings, a list of token ids (integers from 0 to 2**63-1), "
    "or a list of such lists"
)


def _embedding_input(value: Any) -> Any:
    """A clear 400 for the four forms of ``input``, instead of pydantic's error for each branch of the union."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise ValueError(f"{INPUT_FORMS}; got a JSON {type(value).__name__}")
    for i, item in enumerate(value):
        if isinstance(item, str):
            continue
        for token in item if isinstance(item, list) else [item]:
            if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < 2**63:
                where = f"input[{i}]" if isinstance(item, list) else "input"
                raise ValueError(f"{where} holds {token!r}, not a token id; {INPUT_FORMS}")
    return value


class EmbeddingRequest(_Request):
    model: str | None = None
    input: Annotated[str | list[str] | list[int] | list[list[int]], BeforeValidator(_embedding_input)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, description="the first N components, renormalised")
    truncate: bool = Field(
        default=False,
        description="onnxkit extension: cut inputs longer than the model's maximum instead of answering 400",
    )
