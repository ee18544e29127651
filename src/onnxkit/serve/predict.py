"""``onnxkit predict``: a file of requests through a model, in-process, with the server's own handlers.

A transport like the HTTP ones, with a JSONL file for a wire: each input line is a request body as
you would POST it to the model's route (``/v1/embeddings``, ``/v1/chat/completions`` or
``/v1/completions``, ``/v1/classify``, ``/v1/qa``, or KServe v2 ``/v2/models/NAME/infer``), or a
line of OpenAI's Batch API (``{"custom_id", "method", "url", "body"}``). A ``.txt`` file holds one
text per line, for the text tasks. The app (``serve.app.create_app``) runs in this process without
a socket; up to ``concurrency`` requests are in flight, so its dynamic batchers merge them exactly
as they merge a server's clients. Output lines come in input order: the route's response body, or
for Batch API lines ``{"id", "custom_id", "response": {"status_code", "body"}, "error"}``. A line
that fails (a bad request, or a line that is not JSON) is answered with the route's error body and
the run goes on: one bad line never costs the others.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from onnxkit.errors import InvalidRequest, OnnxkitError
from onnxkit.models.folder import Task, model_kind
from onnxkit.serve.app import ModelSpec, create_app, wrap
from onnxkit.serve.errors import error_body
from onnxkit.settings import ServerSettings

ROUTES = {
    Task.EMBEDDINGS: "/v1/embeddings",
    Task.CHAT: "/v1/chat/completions",
    Task.TEXT_CLASSIFICATION: "/v1/classify",
    Task.ZERO_SHOT: "/v1/classify",
    Task.QUESTION_ANSWERING: "/v1/qa",
}
BATCH_API_KEYS = {"custom_id", "body"}


@dataclass(frozen=True)
class Line:
    number: int  # 1-based, for messages
    url: str
    body: dict[str, Any]
    custom_id: str | None = None  # set for OpenAI Batch API lines
    problem: str | None = None  # the line is not a request: answered with a 400, never sent


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any


@dataclass
class Summary:
    ok: int = 0
    failed: int = 0
    batches: int = 0  # runtime calls the model made (its statistics' execution_count)
    batched: int = 0  # requests those calls served: more than ``batches`` when requests were merged


def route_for(kind: Task, name: str, body: dict[str, Any]) -> str:
    if kind is Task.TENSOR:
        return f"/v2/models/{name}/infer"
    if kind is Task.CHAT and "prompt" in body and "messages" not in body:
        return "/v1/completions"
    return ROUTES[kind]


def text_body(kind: Task, text: str) -> dict[str, Any]:
    if kind is Task.CHAT:
        return {"messages": [{"role": "user", "content": text}]}
    if kind in (Task.EMBEDDINGS, Task.TEXT_CLASSIFICATION):
        return {"input": text}
    raise InvalidRequest(f"a .txt input holds one text per line; a {kind} model needs JSONL request bodies")


def read_lines(path: Path, spec: ModelSpec, kind: Task) -> Iterator[Line]:
    """The requests in ``path``, lazily (blank lines skipped; a line that is not a request is marked)."""
    is_text = path.suffix == ".txt"
    default = route_for(kind, spec.name, {})
    with path.open(encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            if is_text:
                body = text_body(kind, raw.rstrip("\n"))
                yield Line(number, route_for(kind, spec.name, body), {"model": spec.name, **body})
                continue
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as exc:
                problem = f"line {number} is not JSON ({exc.msg}); expected a request body"
                yield Line(number, default, {}, problem=problem)
                continue
            if not isinstance(data, dict):
                problem = f"line {number} is a JSON {type(data).__name__}; expected a request body (an object)"
                yield Line(number, default, {}, problem=problem)
                continue
            if data.keys() >= BATCH_API_KEYS:
                body = data["body"] if isinstance(data["body"], dict) else {}
                url = str(data.get("url") or route_for(kind, spec.name, body))
                yield Line(number, url, _named(url, spec.name, body), str(data["custom_id"]))
            else:
                url = route_for(kind, spec.name, data)
                yield Line(number, url, _named(url, spec.name, data))


def _named(url: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI-style routes take the model in the body (filled in when left out); KServe's in the URL."""
    return {"model": name, **body} if url.startswith("/v1/") else body


async def _send(client: httpx.AsyncClient, line: Line) -> Answer:
    if line.problem is not None:
        return Answer(400, error_body(line.url, InvalidRequest(line.problem)))
    try:
        r = await client.post(line.url, json=line.body)
    except OnnxkitError as exc:  # raised below the app's handlers (e.g. by its middleware)
        return Answer(int(exc.status), error_body(line.url, exc))
    return Answer(r.status_code, r.json() if r.content else None)


async def _window(
    lines: Iterable[Line], client: httpx.AsyncClient, concurrency: int
) -> AsyncIterator[tuple[Line, Answer]]:
    """Answers in input order, with at most ``concurrency`` requests in flight."""
    pending: collections.deque[tuple[Line, asyncio.Task[Answer]]] = collections.deque()
    try:
        for line in lines:
            pending.append((line, asyncio.create_task(_send(client, line))))
            if len(pending) >= concurrency:
                head, task = pending.popleft()
                yield head, await task
        while pending:
            head, task = pending.popleft()
            yield head, await task
    finally:
        for _, task in pending:
            task.cancel()


def render(line: Line, answer: Answer) -> str:
    if line.custom_id is None:
        return json.dumps(answer.body, separators=(",", ":"))
    ok = answer.status < 400
    out = {
        "id": f"line-{line.number}",
        "custom_id": line.custom_id,
        "response": {"status_code": answer.status, "body": answer.body},
        "error": None if ok else (answer.body or {}).get("error"),
    }
    return json.dumps(out, separators=(",", ":"))


async def predict_async(
    spec: ModelSpec,
    source: Path,
    out: IO[str],
    *,
    settings: ServerSettings | None = None,
    concurrency: int = 64,
    progress: bool = True,
) -> Summary:
    from tqdm import tqdm

    kind = model_kind(spec.path)
    settings = settings or ServerSettings()
    if not source.is_file():
        raise InvalidRequest(f"input file {source} does not exist")
    lines = read_lines(source, spec, kind)
    first = next(lines, None)  # an unreadable file fails before the model loads
    app = create_app(settings, [spec])
    summary = Summary()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=wrap(app, settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://predict", timeout=None) as client:
            bar = tqdm(desc=f"predict {spec.name}", unit="req", disable=not progress)
            stream = lines if first is None else _chain(first, lines)
            async for line, answer in _window(stream, client, max(1, concurrency)):
                out.write(render(line, answer) + "\n")
                if answer.status < 400:
                    summary.ok += 1
                else:
                    summary.failed += 1
                bar.update(1)
            bar.close()
            stats = (await client.get(f"/v2/models/{spec.name}/stats")).json()["model_stats"]
            summary.batches = sum(int(s["execution_count"]) for s in stats)
            summary.batched = sum(int(s["inference_stats"]["queue"]["count"]) for s in stats)
    return summary


def _chain(first: Line, rest: Iterator[Line]) -> Iterator[Line]:
    yield first
    yield from rest


def predict(spec: ModelSpec, source: Path, out: IO[str], **options: Any) -> Summary:
    return asyncio.run(predict_async(spec, source, out, **options))
