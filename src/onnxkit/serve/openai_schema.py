"""OpenAI request bodies (pydantic). Unknown fields are ignored, as OpenAI's own server does."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Request):
    include_usage: bool = False


class Sampled(_Request):
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
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
    user: str | None = None

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def top_k_or_none(self) -> int | None:
        return self.top_k if self.top_k and self.top_k > 0 else None


class ChatMessage(_Request):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ChatRequest(Sampled):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(Sampled):
    prompt: str | list[str]
    echo: bool = False


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
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None
    truncate: bool = Field(
        default=False,
        description="onnxkit extension: cut inputs longer than the model's maximum instead of answering 400",
    )
