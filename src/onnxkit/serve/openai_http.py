"""OpenAI-compatible routes: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings.

A transport: wire format ↔ task calls, errors raised as onnxkit errors.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from onnxkit.errors import InvalidRequest
from onnxkit.runtime.genai import Sampling
from onnxkit.runtime.store import Model, ModelStore
from onnxkit.serve import tfserving_http
from onnxkit.serve.openai_schema import ChatRequest, CompletionRequest, EmbeddingRequest, Sampled
from onnxkit.serve.state import AppState
from onnxkit.tasks.chat import ChatModel, Piece
from onnxkit.tasks.embeddings import Embedder

router = APIRouter(tags=["openai"])
T = TypeVar("T")


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.onnxkit
    return state


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json")


def _pick(store: ModelStore, name: str | None, task: str, kind: type[T]) -> tuple[str, T]:
    if name is None:
        candidates = [m.name for m in store.models() if m.task == task]
        if not candidates:
            raise InvalidRequest(f"no {task} model is served; load one with `onnxkit serve MODEL`", param="model")
        name = candidates[0]
    handle = store.handle(name)
    if not isinstance(handle, kind):
        raise InvalidRequest(
            f"model {name!r} serves task {getattr(handle, 'task', '?')!r}; this route needs a {task} model",
            param="model",
        )
    return name, handle


def model_object(model: Model) -> dict[str, Any]:
    live = model.ready_versions()
    created = live[-1].created if live else min((v.created for v in model.versions.values()), default=0)
    return {
        "id": model.name,
        "object": "model",
        "created": created,
        "owned_by": "onnxkit",
        "task": model.task,
        "ready": model.ready,
        # TF-Serving's GET /v1/models/{m} shares this path: its clients read this field.
        **tfserving_http.tfserving_status(model, None),
    }


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    store = _state(request).store
    return _json({"object": "list", "data": [model_object(m) for m in store.models()]})


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> Response:
    return _json(model_object(_state(request).store.model(model_id)))


async def _until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run ``work``; cancel it if the client goes away first."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                task.cancel()
                return

    watcher = asyncio.ensure_future(watch())
    try:
        return await task
    finally:
        watcher.cancel()


def _sampling(model: ChatModel, prompt: list[int], body: Sampled, max_tokens: int | None, i: int) -> Sampling:
    seed = None if body.seed is None else body.seed + i  # n > 1: distinct choices, still reproducible
    return model.sampling(
        prompt,
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k_or_none(),
        seed=seed,
    )


async def _collect(gen: AsyncIterator[Piece]) -> Piece:
    text: list[str] = []
    last = Piece("")
    async for piece in gen:
        text.append(piece.text)
        last = piece
    return Piece("".join(text), last.finish, last.prompt_tokens, last.completion_tokens)


async def _merged(streams: list[AsyncIterator[Piece]]) -> AsyncIterator[tuple[int, Piece]]:
    """Interleave several generations as they produce pieces; cancel all on exit."""
    queue: asyncio.Queue[tuple[int, Piece | None]] = asyncio.Queue()

    async def pump(i: int, gen: AsyncIterator[Piece]) -> None:
        try:
            async for piece in gen:
                await queue.put((i, piece))
        finally:
            await queue.put((i, None))

    tasks = [asyncio.ensure_future(pump(i, g)) for i, g in enumerate(streams)]
    try:
        live = len(tasks)
        while live:
            i, piece = await queue.get()
            if piece is None:
                live -= 1
                if tasks[i].done() and tasks[i].exception():
                    raise tasks[i].exception()  # type: ignore[misc]
                continue
            yield i, piece
    finally:
        for t in tasks:
            t.cancel()


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(body: Any) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request) -> Response:
    name, model = _pick(_state(request).store, body.model, "chat", ChatModel)
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    prompt = model.chat_prompt(messages)
    max_tokens = body.max_completion_tokens or body.max_tokens
    samplings = [_sampling(model, prompt, body, max_tokens, i) for i in range(body.n)]
    stops = body.stops()
    rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    head = {"id": rid, "created": created, "model": name, "system_fingerprint": "onnxkit"}

    if not body.stream:
        gens = [_collect(model.generate(prompt, s, stops)) for s in samplings]
        results = await _until_disconnect(request, asyncio.gather(*gens))
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": r.text},
                "logprobs": None,
                "finish_reason": r.finish,
            }
            for i, r in enumerate(results)
        ]
        usage = _usage(len(prompt), sum(r.completion_tokens for r in results))
        return _json({**head, "object": "chat.completion", "choices": choices, "usage": usage})

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    chunk = {**head, "object": "chat.completion.chunk"}

    async def events() -> AsyncIterator[bytes]:
        completion = 0
        for i in range(body.n):
            first = {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
            yield _sse({**chunk, "choices": [first], **({"usage": None} if include_usage else {})})
        async for i, piece in _merged([model.generate(prompt, s, stops) for s in samplings]):
            delta = {"content": piece.text} if piece.text else {}
            choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": piece.finish}
            completion += piece.completion_tokens
            yield _sse({**chunk, "choices": [choice], **({"usage": None} if include_usage else {})})
        if include_usage:
            yield _sse({**chunk, "choices": [], "usage": _usage(len(prompt), completion)})
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    name, model = _pick(_state(request).store, body.model, "chat", ChatModel)
    texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not texts:
        raise InvalidRequest("prompt is empty; expected a string or a list of strings", param="prompt")
    prompts = [model.text_prompt(t) for t in texts]
    jobs = [(p, t, _sampling(model, p, body, body.max_tokens, j)) for p, t in zip(prompts, texts, strict=True)
            for j in range(body.n)]
    stops = body.stops()
    rid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    head = {"id": rid, "object": "text_completion", "created": created, "model": name,
            "system_fingerprint": "onnxkit"}
    prompt_tokens = sum(len(p) for p in prompts)

    if not body.stream:
        gens = [_collect(model.generate(p, s, stops)) for p, _, s in jobs]
        results = await _until_disconnect(request, asyncio.gather(*gens))
        choices = [
            {"index": i, "text": (t if body.echo else "") + r.text, "logprobs": None, "finish_reason": r.finish}
            for i, ((_, t, _), r) in enumerate(zip(jobs, results, strict=True))
        ]
        usage = _usage(prompt_tokens, sum(r.completion_tokens for r in results))
        return _json({**head, "choices": choices, "usage": usage})

    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    async def events() -> AsyncIterator[bytes]:
        completion = 0
        if body.echo:
            for i, (_, t, _) in enumerate(jobs):
                yield _sse({**head, "choices": [{"index": i, "text": t, "logprobs": None, "finish_reason": None}]})
        async for i, piece in _merged([model.generate(p, s, stops) for p, _, s in jobs]):
            completion += piece.completion_tokens
            choice = {"index": i, "text": piece.text, "logprobs": None, "finish_reason": piece.finish}
            yield _sse({**head, "choices": [choice], **({"usage": None} if include_usage else {})})
        if include_usage:
            yield _sse({**head, "choices": [], "usage": _usage(prompt_tokens, completion)})
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
    name, model = _pick(_state(request).store, body.model, "embeddings", Embedder)
    if body.dimensions is not None and body.dimensions != model.dimensions:
        raise InvalidRequest(
            f"dimensions is {body.dimensions}; model {name!r} produces {model.dimensions}-dimensional embeddings",
            param="dimensions",
        )
    texts, ids = _split_input(body.input)
    result = await model.embed(texts, ids, body.truncate)
    data = []
    for i, vec in enumerate(result.vectors):
        value: Any = base64.b64encode(vec.astype("<f4").tobytes()).decode() if body.encoding_format == "base64" else vec
        data.append({"object": "embedding", "index": i, "embedding": value})
    usage = {"prompt_tokens": result.tokens, "total_tokens": result.tokens}
    return _json({"object": "list", "data": data, "model": name, "usage": usage})


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


