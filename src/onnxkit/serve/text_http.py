"""Routes that OpenAI lacks and its users' tools expect: ``/tokenize``, ``/detokenize`` (vLLM's shape)
and ``/v1/rerank`` (Jina's and Cohere's shape). See docs/openai.md.

A transport: wire format ↔ task calls; errors are raised as onnxkit errors.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from onnxkit.errors import InvalidRequest
from onnxkit.models.folder import Task
from onnxkit.serve.http import app_state, body_of, json_response, read_body
from onnxkit.serve.openai_schema import ChatMessage
from onnxkit.tasks import rerank, tools
from onnxkit.tasks.tokenize import ModelTokens

router = APIRouter(tags=["text"])


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenizeRequest(_Request):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool | None = None
    add_generation_prompt: bool = True
    return_token_strs: bool = False
    tools: list[dict[str, Any]] | None = None


class DetokenizeRequest(_Request):
    model: str | None = None
    tokens: list[int]


class RerankRequest(_Request):
    model: str | None = None
    query: str
    documents: list[str | dict[str, Any]]
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = False


def _tokens(request: Request, name: str | None) -> ModelTokens:
    loaded = app_state(request).models.pick(name, [Task.CHAT, Task.EMBEDDINGS])
    if loaded.chat is not None:
        return ModelTokens(loaded.name, loaded.chat.context_length, chat=loaded.chat)
    assert loaded.embedder is not None
    return ModelTokens(loaded.name, loaded.embedder.max_length, folder=loaded.path)


@router.post("/tokenize", openapi_extra=body_of(TokenizeRequest))
async def tokenize(request: Request) -> Response:
    body = await read_body(request, TokenizeRequest)
    tokens = _tokens(request, body.model)
    if (body.prompt is None) == (body.messages is None):
        raise InvalidRequest('send either "prompt" (text) or "messages" (a chat), not both or neither', param="prompt")
    if tokens.chat is not None and body.add_special_tokens is not None:
        raise InvalidRequest(
            f"model {tokens.name!r} tokenizes as generation does (onnxruntime-genai's tokenizer and the chat "
            "template); leave add_special_tokens out",
            param="add_special_tokens",
        )
    if body.messages is not None:
        use = tools.parse_tools(body.tools, None, None) if body.tools is not None else None
        messages = [m.model_dump(exclude_none=True) for m in body.messages]
        out = await tokens.messages(messages, use, body.add_generation_prompt, body.return_token_strs)
    else:
        add_special = True if body.add_special_tokens is None else body.add_special_tokens
        out = await tokens.text(body.prompt or "", add_special, body.return_token_strs)
    return json_response({"count": len(out.tokens), "max_model_len": out.max_model_len, "tokens": out.tokens,
                  "token_strs": out.strings})  # fmt: skip


@router.post("/detokenize", openapi_extra=body_of(DetokenizeRequest))
async def detokenize(request: Request) -> Response:
    body = await read_body(request, DetokenizeRequest)
    tokens = _tokens(request, body.model)
    return json_response({"prompt": tokens.detokenize(body.tokens)})


def _document(value: str | dict[str, Any], i: int) -> str:
    if isinstance(value, str):
        return value
    text = value.get("text")
    if not isinstance(text, str) or set(value) != {"text"}:
        raise InvalidRequest(f'documents[{i}] must be a string or {{"text": "..."}}', param=f"documents[{i}]")
    return text


@router.post("/v1/rerank", openapi_extra=body_of(RerankRequest))
async def rerank_route(request: Request) -> Response:
    body = await read_body(request, RerankRequest)
    loaded = app_state(request).models.pick(body.model, [Task.TEXT_CLASSIFICATION, Task.EMBEDDINGS])
    documents = [_document(d, i) for i, d in enumerate(body.documents)]
    if loaded.classifier is not None:
        ranking = await rerank.with_cross_encoder(loaded.classifier, body.query, documents, body.top_n)
    else:
        assert loaded.embedder is not None
        ranking = await rerank.with_embeddings(loaded.embedder, body.query, documents, body.top_n)
    results = []
    for r in ranking.results:
        item: dict[str, Any] = {"index": r.index, "relevance_score": r.score}
        if body.return_documents:
            item["document"] = {"text": documents[r.index]}
        results.append(item)
    usage = {"prompt_tokens": ranking.tokens, "total_tokens": ranking.tokens}
    return json_response({"object": "list", "model": loaded.name, "results": results, "usage": usage})
