"""OpenAI-compatible routes: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings.

A transport: wire format ↔ task calls, errors raised as onnxkit errors. Chat and completions differ
only in how a prompt is made and how a choice is written (``ChatShape`` / ``TextShape``); both go
through ``respond``, streamed or not.
"""

from __future__ import annotations

import base64
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from onnxkit.errors import InternalError, InvalidRequest, OnnxkitError, PayloadTooLarge
from onnxkit.runtime.genai import Guidance, Sampling
from onnxkit.serve.errors import openai_body
from onnxkit.serve.http import app_state, body_of, json_response, read_body
from onnxkit.serve.openai_choices import ChatChoice, TextChoice
from onnxkit.serve.openai_schema import ChatRequest, CompletionRequest, EmbeddingRequest, Sampled
from onnxkit.tasks import guidance, tools
from onnxkit.tasks.chat import ChatModel, Piece, check_stops
from onnxkit.tasks.dataplane import VersionStatus, model_version_status
from onnxkit.tasks.embeddings import check_dimensions, shorten
from onnxkit.tasks.models import Model, Models
from onnxkit.tasks.tools import ToolUse

log = logging.getLogger("onnxkit.openai")
router = APIRouter(tags=["openai"])


# -- models ------------------------------------------------------------------------------------------
def model_object(models: Models, model: Model) -> dict[str, Any]:
    live = model.ready_versions()
    created = live[-1].created if live else min((v.created for v in model.versions.values()), default=0)
    task = model.task
    statuses = [VersionStatus(v.version, v.state, v.reason) for v in model.versions.values()]
    return {
        "id": model.name,
        "object": "model",
        "created": created,
        "owned_by": "onnxkit",
        "task": task.value if task else "",
        "ready": model.ready,
        # the model a request without "model" gets on its task's routes
        "default": task is not None and models.default_name([task]) == model.name,
        # TF-Serving's GET /v1/models/{m} shares this path: its clients read this field.
        **model_version_status(sorted(statuses, key=lambda s: s.version, reverse=True)),
    }


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    models = app_state(request).models
    return json_response({"object": "list", "data": [model_object(models, m) for m in models.models()]})


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> Response:
    models = app_state(request).models
    return json_response(model_object(models, models.model(model_id)))


# -- chat and completions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Generation:
    prompt: list[int]
    sampling: Sampling


@dataclass(frozen=True)
class Shape:
    """How a request's choices are written: chat messages or completion texts (``serve.openai_choices``)."""

    object: str
    chunk_object: str
    id_prefix: str
    choices: Sequence[ChatChoice | TextChoice]


# OpenAI's /v1/completions generates 16 tokens when max_tokens is not given (chat: up to the context)
COMPLETION_DEFAULT_TOKENS = 16


def _sampling(
    model: ChatModel, prompt: list[int], body: Sampled, max_tokens: int | None, i: int,
    guide: Guidance | None, logprobs: int | None,
) -> Sampling:  # fmt: skip
    seed = None if body.seed is None else body.seed + i  # n > 1: distinct choices, still reproducible
    return model.sampling(
        prompt, max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
        top_k=body.top_k_or_none(), seed=seed, min_tokens=body.min_tokens,
        repetition_penalty=body.repetition_penalty, frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty, logprobs=logprobs, guidance=guide,
    )  # fmt: skip


def _guide(body: Sampled, use: ToolUse | None) -> Guidance | None:
    """The grammar a request's output follows: its tool calls (and answer format), or its answer format."""
    constraint = guidance.from_request(body.response_format, body.guided_choice)
    if use is not None and use.active:
        return Guidance("lark_grammar", tools.grammar(use, constraint))
    return constraint.guidance() if constraint is not None else None


def _check_generations(count: int, model: ChatModel) -> None:
    bound = model.limits.max_generations
    if count > bound:
        raise PayloadTooLarge(
            f"the request asks for {count} generations (prompts x n); at most {bound} per request "
            "(the server's --limit max_generations). Send fewer prompts or a smaller n",
            param="n",
        )


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(body: Any) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


async def respond(
    model: ChatModel, gens: list[Generation], body: Sampled, shape: Shape, prompt_tokens: int
) -> Response:
    """Run every generation of one request and answer as one body or as server-sent events."""
    jobs = [(g.prompt, g.sampling) for g in gens]
    stops = check_stops(body.stops(), model.limits)
    choices = shape.choices
    head = {"id": f"{shape.id_prefix}{uuid.uuid4().hex[:24]}", "created": int(time.time()),
            "model": model.name, "system_fingerprint": "onnxkit"}  # fmt: skip

    def enough(i: int) -> bool:  # a model repeating a tool call has said all it will
        return choices[i].done_calling

    if not body.stream:
        finals: dict[int, Piece] = {}
        async for i, piece in model.generate(jobs, stops, enough):
            choices[i].feed(piece)
            if piece.finish is not None:
                finals[i] = piece
        out = [c.whole(finals[i].finish) for i, c in enumerate(choices)]
        usage = _usage(prompt_tokens, sum(p.completion_tokens for p in finals.values()))
        return json_response({**head, "object": shape.object, "choices": out, "usage": usage})

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    chunk = {**head, "object": shape.chunk_object}
    usage_none = {"usage": None} if include_usage else {}
    stream = model.generate(jobs, stops, enough)
    # Admission (or a 429, or a grammar that does not compile) and the first piece come before the 200:
    # what fails early is a plain error.
    first_piece = await anext(stream)

    async def events() -> AsyncIterator[bytes]:
        completion = 0
        try:
            for c in choices:
                opening = c.opening()
                if opening is not None:
                    yield _sse({**chunk, "choices": [opening], **usage_none})
            piece: tuple[int, Piece] | None = first_piece
            while piece is not None:
                i, p = piece
                completion += p.completion_tokens
                for entry in choices[i].deltas(p):
                    yield _sse({**chunk, "choices": [entry], **usage_none})
                piece = await anext(stream, None)
            if include_usage:
                yield _sse({**chunk, "choices": [], "usage": _usage(prompt_tokens, completion)})
        except Exception as exc:  # after the 200: an error event, then the end of the stream
            err = exc if isinstance(exc, OnnxkitError) else InternalError(f"internal error ({type(exc).__name__})")
            if not isinstance(exc, OnnxkitError):
                log.exception("chat stream failed")
            yield _sse(openai_body(err))
        finally:
            await stream.aclose()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@router.post("/v1/chat/completions", openapi_extra=body_of(ChatRequest))
async def chat_completions(request: Request) -> Response:
    body = await read_body(request, ChatRequest)
    model = app_state(request).models.chat(body.model)
    _check_generations(body.n, model)
    use = tools.parse_tools(body.tools, body.tool_choice, body.parallel_tool_calls)
    prompt = await model.chat_prompt([m.model_dump(exclude_none=True) for m in body.messages], use)
    max_tokens = body.max_completion_tokens or body.max_tokens
    guide, logprobs = _guide(body, use), body.logprob_count()
    gens = [Generation(prompt, _sampling(model, prompt, body, max_tokens, i, guide, logprobs)) for i in range(body.n)]
    shape = Shape("chat.completion", "chat.completion.chunk", "chatcmpl-",
                  [ChatChoice(i, use, body.logprobs) for i in range(body.n)])  # fmt: skip
    return await respond(model, gens, body, shape, len(prompt))


@router.post("/v1/completions", openapi_extra=body_of(CompletionRequest))
async def completions(request: Request) -> Response:
    body = await read_body(request, CompletionRequest)
    model = app_state(request).models.chat(body.model)
    texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not texts:
        raise InvalidRequest("prompt is empty; expected a string or a list of strings", param="prompt")
    if body.echo and body.logprobs is not None:
        raise InvalidRequest(
            "echo with logprobs asks for the prompt's logprobs, which onnxkit does not compute; drop one of them",
            param="logprobs",
        )
    _check_generations(len(texts) * body.n, model)
    params = ["prompt"] if isinstance(body.prompt, str) else [f"prompt[{i}]" for i in range(len(texts))]
    prompts = [await model.text_prompt(t, param) for t, param in zip(texts, params, strict=True)]
    max_tokens = COMPLETION_DEFAULT_TOKENS if body.max_tokens is None else body.max_tokens
    guide = _guide(body, None)
    gens = [Generation(p, _sampling(model, p, body, max_tokens, j, guide, body.logprobs))
            for p in prompts for j in range(body.n)]  # fmt: skip
    writers = [TextChoice(i, t if body.echo else "", body.logprobs is not None)
               for i, t in enumerate(t for t in texts for _ in range(body.n))]  # fmt: skip
    shape = Shape("text_completion", "text_completion", "cmpl-", writers)
    return await respond(model, gens, body, shape, sum(len(p) for p in prompts))


# -- embeddings ------------------------------------------------------------------------------------------
@router.post("/v1/embeddings", openapi_extra=body_of(EmbeddingRequest))
async def embeddings(request: Request) -> Response:
    body = await read_body(request, EmbeddingRequest)
    model = app_state(request).models.embedder(body.model)
    if body.dimensions is not None and model.dimensions is not None:
        check_dimensions(body.dimensions, model.dimensions, model.name)  # before the queue
    texts, ids = _split_input(body.input)
    result = await model.embed(texts, ids, body.truncate)
    data = []
    for i, vec in enumerate(shorten(result.vectors, body.dimensions, model.name)):
        value: Any = base64.b64encode(vec.astype("<f4").tobytes()).decode() if body.encoding_format == "base64" else vec
        data.append({"object": "embedding", "index": i, "embedding": value})
    usage = {"prompt_tokens": result.tokens, "total_tokens": result.tokens}
    return json_response({"object": "list", "data": data, "model": model.name, "usage": usage})


def _split_input(value: Any) -> tuple[list[str] | None, list[list[int]] | None]:
    if isinstance(value, str):
        value = [value]
    if not value:
        raise InvalidRequest("input is empty; expected a string, a list of strings or token ids", param="input")
    if all(isinstance(v, str) for v in value):
        if any(not v for v in value):
            raise InvalidRequest("input contains an empty string", param="input")
        return list(value), None
    if all(isinstance(v, int) for v in value):
        return None, [list(value)]
    if all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value):
        return None, [list(v) for v in value]
    raise InvalidRequest(
        "input must be a string, a list of strings, a list of token ids, or a list of such lists", param="input"
    )
