"""``onnxkit predict``: a file of requests through a model, in-process, with the server's own handlers.

A transport like the HTTP ones, with a JSONL file for a wire: each input line is a request body as
you would POST it to the model's route (``/v1/embeddings``, ``/v1/chat/completions`` or
``/v1/completions``, ``/v1/classify``, ``/v1/qa``, ``/v1/rerank`` for a line with ``query`` and
``documents``, or KServe v2 ``/v2/models/NAME/infer``), or a
line of OpenAI's Batch API (``{"custom_id", "method", "url", "body"}``). A ``.txt`` file holds one
text per line, for the text tasks (a ``.parquet`` file one per row of its ``text`` column). The app
(``serve.app.create_app``) runs in this process without a socket; up to ``concurrency`` requests
are in flight, so its dynamic batchers merge them exactly as they merge a server's clients. Output
lines come in input order: the route's response body, or for Batch API lines
``{"id", "custom_id", "response": {"status_code", "body"}, "error"}``. A line
that fails, whatever the reason (not UTF-8, longer than the body limit, not JSON, NaN, not an
object, a bad request, an error or exception in the app), is answered in place with the route's
error body and the run goes on: one bad line never costs the others. Each answer is flushed as it
is written; ``skip`` resumes a run whose first answers are already written (``predict_partial``).
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import contextlib
import itertools
import json
import re
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import httpx
import orjson

from onnxkit.errors import InternalError, InvalidRequest, OnnxkitError, PayloadTooLarge
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
RERANKERS = (Task.TEXT_CLASSIFICATION, Task.EMBEDDINGS)
BATCH_API_KEYS = {"custom_id", "body"}
BATCH_API_FIELDS = {"custom_id", "method", "url", "body"}
# What a Batch API line may POST to: the inference routes (never e.g. the repository's unload, which
# would take the model away from the lines after it).
INFERENCE_URL = re.compile(
    r"^(?:/v1/(?:embeddings|chat/completions|completions|classify|qa|rerank)"
    r"|/v2/models/[^/]+(?:/versions/[^/]+)?/infer"
    r"|/v1/models/[^/:]+(?:/versions/[^/:]+)?:predict)$"
)
JSON_HEADERS = {"content-type": "application/json"}
MAX_LINE_BYTES = ServerSettings.max_body_bytes  # a line is a request body: the same limit
RETRIES_ALONE = 3  # a 429 with no other line in flight: tries before it is the line's answer


@dataclass(frozen=True)
class Line:
    number: int  # 1-based, for messages
    url: str
    body: dict[str, Any]
    custom_id: str | None = None  # set for OpenAI Batch API lines
    # the line is not a request: answered with this error (a str: a 400), never sent
    problem: str | OnnxkitError | None = None


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any


class Interrupted(Exception):
    """The run was asked to stop (Ctrl-C, SIGTERM); every answer written before is flushed."""


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
    if kind in RERANKERS and "query" in body and "documents" in body:
        return "/v1/rerank"  # a cross-encoder (one-logit classifier) or an embeddings model ranks documents
    return ROUTES[kind]


def text_body(kind: Task, text: str) -> dict[str, Any]:
    if kind is Task.CHAT:
        return {"messages": [{"role": "user", "content": text}]}
    if kind in (Task.EMBEDDINGS, Task.TEXT_CLASSIFICATION):
        return {"input": text}
    raise InvalidRequest(f"a .txt or Parquet input holds bare texts; a {kind} model needs JSONL request bodies")


def read_lines(
    path: Path, spec: ModelSpec, kind: Task, *, skip: int = 0, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[Line]:
    """The requests in ``path``, lazily (blank lines skipped; a line that is not a request is marked).

    ``skip`` passes over that many requests (non-blank lines) without parsing them, for a resumed run.
    """
    if path.suffix == ".parquet":
        from onnxkit.serve.predict_parquet import parquet_texts  # pyarrow only for a Parquet input

        yield from (text_line(n, text, spec, kind) for n, text in parquet_texts(path, skip=skip))
        return
    is_text = path.suffix == ".txt"
    answered = 0
    with path.open("rb") as f:
        for number, raw in numbered_lines(f, max_line_bytes):
            if isinstance(raw, str) and not raw.strip():
                continue
            answered += 1
            if answered <= skip:
                continue
            if isinstance(raw, OnnxkitError):
                yield Line(number, route_for(kind, spec.name, {}), {}, problem=raw)
                continue
            line = parse_line(number, raw, spec, kind, is_text=is_text)
            if line is not None:
                yield line


def numbered_lines(f: BinaryIO, max_bytes: int, first: int = 1) -> Iterator[tuple[int, str | OnnxkitError]]:
    """Each line of ``f`` (numbered from ``first``: ``f`` may start mid-file) decoded, without its ending;
    or why it cannot be read.

    A line is read in at most ``max_bytes`` (the body limit) at a time, so one huge line costs no
    memory; it and a line that is not UTF-8 become errors answered in place, and reading goes on.
    """
    number = first - 1
    while raw := f.readline(max_bytes + 1):
        number += 1
        if len(raw) > max_bytes and not raw.endswith(b"\n"):
            size = len(raw) + _rest_of_line(f)
            yield number, PayloadTooLarge(
                f"line {number} is {size} bytes; a request body is limited to {max_bytes} bytes "
                "(--max-body-bytes): split the request or raise the limit"
            )
            continue
        raw = raw.removesuffix(b"\n").removesuffix(b"\r")
        if number == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, InvalidRequest(
                f"line {number} is not UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1} "
                f"({exc.reason}); expected UTF-8 text (re-encode the file, e.g. iconv -t UTF-8)"
            )


def _rest_of_line(f: BinaryIO) -> int:
    """Reads past the rest of an over-long line, a chunk at a time; returns its length (no line ending)."""
    size = 0
    while chunk := f.readline(1 << 20):
        if chunk.endswith(b"\n"):
            return size + len(chunk.removesuffix(b"\n").removesuffix(b"\r"))
        size += len(chunk)
    return size


def parse_line(number: int, raw: str, spec: ModelSpec, kind: Task, *, is_text: bool) -> Line | None:
    """One line of a .jsonl or .txt input as a request; None for a blank line."""
    if not raw.strip():
        return None
    if is_text:
        return text_line(number, raw, spec, kind)
    default = route_for(kind, spec.name, {})
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        problem = f"line {number} is not JSON ({exc.msg} at column {exc.colno}); expected a request body"
        return Line(number, default, {}, problem=problem)
    except (ValueError, RecursionError) as exc:  # an integer of >4300 digits; nesting deeper than Python's stack
        problem = f"line {number} cannot be read as JSON ({exc}); expected a request body"
        return Line(number, default, {}, problem=problem)
    if not isinstance(data, dict):
        problem = f"line {number} is a JSON {type(data).__name__}; expected a request body (an object)"
        return Line(number, default, {}, problem=problem)
    if data.keys() >= BATCH_API_KEYS:
        return _batch_line(number, data, spec, kind)
    url = route_for(kind, spec.name, data)
    return Line(number, url, _named(url, spec.name, data))


def text_line(number: int, text: str | None, spec: ModelSpec, kind: Task) -> Line:
    """A bare text (a .txt line, a Parquet row's ``text``) as the request its model's route takes."""
    if text is None:  # a Parquet null
        return Line(number, route_for(kind, spec.name, {}), {}, problem=f"row {number} has no text (null)")
    body = text_body(kind, text)
    return Line(number, route_for(kind, spec.name, body), {"model": spec.name, **body})


def _batch_line(number: int, data: dict[str, Any], spec: ModelSpec, kind: Task) -> Line:
    custom_id, body, url = str(data["custom_id"]), data["body"], data.get("url")
    default = route_for(kind, spec.name, body if isinstance(body, dict) else {})
    problem = None
    if extra := sorted(data.keys() - BATCH_API_FIELDS):
        problem = f"line {number} has {', '.join(extra)}; a Batch API line has custom_id, method, url and body"
    elif data.get("method", "POST") != "POST":
        problem = f"line {number} has method {data['method']!r}; a Batch API line POSTs (method \"POST\")"
    elif not isinstance(body, dict):
        problem = f"line {number}: body is a JSON {type(body).__name__}; expected the request body (an object)"
    elif url is not None and not (isinstance(url, str) and INFERENCE_URL.match(url)):
        problem = (f"line {number}: url {url!r} is not an inference route; expected one of /v1/embeddings, "
                   "/v1/chat/completions, /v1/completions, /v1/classify, /v1/qa, /v1/rerank, /v2/models/NAME/infer, "
                   "/v1/models/NAME:predict")
    if problem is not None:
        return Line(number, default, {}, custom_id, problem)
    url = url or default
    return Line(number, url, _named(url, spec.name, body), custom_id)


def _named(url: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI-style routes take the model in the body (filled in when left out); KServe's in the URL."""
    return {"model": name, **body} if url.startswith("/v1/") else body


@dataclass
class _Flight:
    lines: int = 0  # lines of this run in flight


def encode_body(line: Line) -> bytes:
    """The line's request as it goes over the wire: strict JSON, so NaN and Infinity are refused."""
    try:
        return json.dumps(line.body, ensure_ascii=False, allow_nan=False).encode()
    except UnicodeEncodeError:
        # a lone surrogate ("\ud800" in the line): sent escaped, as the line wrote it, for the route to judge
        return json.dumps(line.body, allow_nan=False).encode()


async def _send(client: httpx.AsyncClient, line: Line, flight: _Flight | None = None) -> Answer:
    """The line's answer; never raises: whatever goes wrong is this line's error, and the run goes on."""
    if line.problem is not None:
        err = line.problem if isinstance(line.problem, OnnxkitError) else InvalidRequest(line.problem)
        return Answer(int(err.status), error_body(line.url, err))
    try:
        content = encode_body(line)
    except (ValueError, RecursionError) as exc:
        err = InvalidRequest(f"line {line.number} holds a value JSON cannot carry ({exc}); expected finite "
                             "numbers (NaN, Infinity and numbers beyond +-1.8e308 are not JSON)")
        return Answer(400, error_body(line.url, err))
    flight = flight or _Flight()
    flight.lines += 1
    try:
        alone = 0
        while True:
            r = await client.post(line.url, content=content, headers=JSON_HEADERS)
            # A 429 here is this run's own load (the model's queue full of its other lines): wait for
            # them and retry; a line refused with nothing else in flight keeps its 429 after a few tries.
            if r.status_code != 429 or alone >= RETRIES_ALONE:
                break
            alone = alone + 1 if flight.lines <= 1 else 0
            await asyncio.sleep(0.05 * 2 ** min(alone, 4))
        return _answer(line, r)
    except OnnxkitError as exc:  # raised below the app's handlers (e.g. by its middleware)
        return Answer(int(exc.status), error_body(line.url, exc))
    except Exception as exc:  # any failure is this one line's answer
        err = InternalError(f"line {line.number} failed: {type(exc).__name__}: {exc}")
        return Answer(500, error_body(line.url, err))
    finally:
        flight.lines -= 1


def _answer(line: Line, r: httpx.Response) -> Answer:
    if not r.content:
        return Answer(r.status_code, None)
    try:
        return Answer(r.status_code, r.json())
    except ValueError:
        err = InternalError(f"the route answered line {line.number} with status {r.status_code} and a body "
                            f"that is not JSON: {r.text[:200]!r}")
        return Answer(max(r.status_code, 500), error_body(line.url, err))


async def answers(
    lines: Iterable[Line], client: httpx.AsyncClient, concurrency: int
) -> AsyncIterator[tuple[Line, Answer]]:
    """Answers in input order, with at most ``concurrency`` requests in flight."""
    pending: collections.deque[tuple[Line, asyncio.Task[Answer]]] = collections.deque()
    flight = _Flight()
    try:
        for line in lines:
            pending.append((line, asyncio.create_task(_send(client, line, flight))))
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
    error = answer.body.get("error") if isinstance(answer.body, dict) else None
    out = {
        "id": f"line-{line.number}",
        "custom_id": line.custom_id,
        "response": {"status_code": answer.status, "body": answer.body},
        "error": None if ok else error or {"message": f"status {answer.status}"},
    }
    return json.dumps(out, separators=(",", ":"))


def rendered_ok(line: str) -> bool:
    """Whether a line ``render`` wrote is a success (a resumed run counts the lines it keeps)."""
    try:
        data = orjson.loads(line)  # fast; a partial of a million answers is read once per resume
    except orjson.JSONDecodeError:
        data = json.loads(line)  # NaN, which json.dumps writes and orjson refuses
    if isinstance(data, dict) and "custom_id" in data and isinstance(data.get("response"), dict):
        return bool(data["error"] is None)
    return not (isinstance(data, dict) and "error" in data)


async def predict_async(
    spec: ModelSpec,
    source: Path,
    out: IO[str],
    *,
    settings: ServerSettings | None = None,
    concurrency: int = 64,
    progress: bool = True,
    skip: int = 0,
    stop: threading.Event | None = None,
) -> Summary:
    """Answers ``source``'s requests into ``out``, one flushed line each; ``skip``: requests already answered;
    ``stop`` set (by a signal handler): ``Interrupted`` after the line being written, a safe point."""
    from tqdm import tqdm

    kind = model_kind(spec.path)
    settings = settings or ServerSettings()
    if not source.is_file():
        raise InvalidRequest(f"input file {source} does not exist")
    lines = read_lines(source, spec, kind, skip=skip, max_line_bytes=settings.max_body_bytes)
    first = next(lines, None)  # an unreadable file fails before the model loads
    summary = Summary()
    async with app_client(spec, settings) as client:
        bar = tqdm(desc=f"predict {spec.name}", unit="req", initial=skip, disable=not progress)
        stream = lines if first is None else itertools.chain([first], lines)
        async for line, answer in answers(stream, client, max(1, concurrency)):
            out.write(render(line, answer) + "\n")
            out.flush()  # a line written is a line kept, whatever stops the run later
            if answer.status < 400:
                summary.ok += 1
            else:
                summary.failed += 1
            bar.update(1)
            if stop is not None and stop.is_set():
                raise Interrupted
        bar.close()
        await _read_stats(client, spec.name, summary)
    return summary


@contextlib.asynccontextmanager
async def app_client(spec: ModelSpec, settings: ServerSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The app ``onnxkit serve`` runs, over one model, started in this event loop; a client without a socket."""
    app = create_app(settings, [spec])
    async with app.router.lifespan_context(app):
        # raise_app_exceptions=False: an exception in a route is its 500 in the route's shape, not the run's end
        transport = httpx.ASGITransport(app=wrap(app, settings), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://predict", timeout=None) as client:
            yield client


async def _read_stats(client: httpx.AsyncClient, name: str, summary: Summary) -> None:
    try:
        stats = (await client.get(f"/v2/models/{name}/stats")).json()["model_stats"]
        summary.batches = sum(int(s["execution_count"]) for s in stats)
        summary.batched = sum(int(s["inference_stats"]["queue"]["count"]) for s in stats)
    except Exception:  # figures for the summary; every answer is written by now
        return


def predict(spec: ModelSpec, source: Path, out: IO[str], **options: Any) -> Summary:
    return asyncio.run(predict_async(spec, source, out, **options))
