"""The web page at ``/ui`` (docs/ui.md), and the two model routes it needs that the API lacked.

- ``GET /ui`` and ``GET /ui/{file}``: the page, static files shipped in the package (``serve/ui``);
  plain ES modules, no build step. They load without an API key; every API call the page makes
  sends the key the user typed.
- ``GET /``: a pointer to the page (HTML for browsers, JSON otherwise).
- ``GET /v1/models/{id}/details``: every version with its state (and reason), plus the
  ``onnxkit inspect --json`` report of a version's ONNX file, card included.
- ``GET /v1/models/{id}/graph``: that file's graph as ``onnxkit view --output g.svg`` draws it.

The two model routes read files: they run in a worker thread and import onnx there, lazily, so a
server that nobody inspects never loads it (and never torch or transformers).
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response

from onnxkit import __version__
from onnxkit.errors import InvalidRequest, ModelNotFound, ModelUnavailable
from onnxkit.models.folder import onnx_file
from onnxkit.serve.http import app_state, json_response
from onnxkit.tasks.models import Model, Version, version_order
from onnxkit.types import JSON

router = APIRouter(tags=["ui"])
T = TypeVar("T")

UI_DIR = Path(__file__).with_name("ui")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}
# The page loads nothing from anywhere but this server, and runs no inline script: a reply that a
# model wrote, or a node name in a graph, can never become code.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


# -- static files ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _static(path: Path, mtime_ns: int) -> tuple[bytes, str]:
    body = path.read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


def _file_response(request: Request, relative: str) -> Response:
    path = (UI_DIR / relative).resolve()
    content_type = CONTENT_TYPES.get(path.suffix.lower())
    if content_type is None or not path.is_relative_to(UI_DIR.resolve()) or not path.is_file():
        raise ModelNotFound(f"no file /ui/{relative}; the page's files are listed in docs/ui.md")
    body, etag = _static(path, path.stat().st_mtime_ns)
    # no-cache: revalidate every time (an upgraded server shows its new page), 304 when unchanged.
    headers = {"etag": etag, "cache-control": "no-cache", **SECURITY_HEADERS}
    if path.suffix == ".html":
        headers["content-security-policy"] = CSP
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=content_type, headers=headers)


@router.api_route("/ui", methods=["GET", "HEAD"], include_in_schema=False)
@router.api_route("/ui/", methods=["GET", "HEAD"], include_in_schema=False)
async def page(request: Request) -> Response:
    return _file_response(request, "index.html")


@router.api_route("/ui/{relative:path}", methods=["GET", "HEAD"], include_in_schema=False)
async def ui_file(relative: str, request: Request) -> Response:
    return _file_response(request, relative)


@router.get("/", include_in_schema=False)
async def root(request: Request) -> Response:
    links = {"ui": "/ui", "docs": "/docs", "openapi": "/openapi.json", "health": "/health", "metrics": "/metrics"}
    if "text/html" not in request.headers.get("accept", ""):
        return json_response({"server": "onnxkit", "version": __version__, "links": links})
    items = "".join(f'<li><a href="{href}">{name}</a></li>' for name, href in links.items())
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>onnxkit</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
        f'<body><h1>onnxkit {__version__}</h1><p><a href="/ui">Open the playground and model browser</a></p>'
        f"<ul>{items}</ul></body></html>"
    )
    return Response(html, media_type="text/html; charset=utf-8", headers={"content-security-policy": CSP})


# -- model details and graph ----------------------------------------------------------------------
def _model_and_version(request: Request, model_id: str, version: str | None) -> tuple[Model, Version]:
    unknown = sorted(set(request.query_params) - {"version"})
    if unknown:
        raise InvalidRequest(f"unknown query parameter {unknown[0]!r}; these routes take only ?version=V",
                             param=unknown[0])  # fmt: skip
    model = app_state(request).models.model(model_id)
    return model, _version(model, version)


def _order(version: Version) -> tuple[int, str]:
    return version_order(version.version)


def _version(model: Model, wanted: str | None) -> Version:
    """The version asked for; else the latest ready one; else the latest known (to say why it failed)."""
    if wanted:
        found = model.versions.get(wanted)
        if found is None:
            have = ", ".join(v.version for v in sorted(model.versions.values(), key=_order)) or "none"
            raise ModelNotFound(f"model {model.name!r} has no version {wanted!r}; versions: {have}", param="version")
        return found
    live = model.ready_versions()
    if live:
        return live[-1]
    known = sorted(model.versions.values(), key=_order)
    if not known:
        raise ModelUnavailable(f"model {model.name!r} has no version loaded yet")
    return known[-1]


def _describe(path: Path) -> JSON:
    from onnxkit.inspect import inspect_model

    file = onnx_file(path)  # the file the server loads
    report = inspect_model(file)
    # The server's file system is not the client's business: name the file inside the model folder.
    report["path"] = file.name if path.is_file() else str(file.relative_to(path))
    return report


@functools.lru_cache(maxsize=8)
def _svg(path: Path, mtime_ns: int) -> tuple[bytes, bytes]:
    from onnxkit.view import rendering

    svg = rendering(path, ".svg").encode()
    return svg, gzip.compress(svg, compresslevel=6)


def _graph(path: Path) -> tuple[bytes, bytes]:
    file = onnx_file(path)
    return _svg(file, file.stat().st_mtime_ns)


async def _read(name: str, version: Version, work: Callable[[], T]) -> T:
    try:
        return await asyncio.to_thread(work)
    except Exception as exc:  # whatever a damaged file makes the reader raise: the model's fault, not a 500
        reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        what = f"model {name!r} version {version.version}"
        raise ModelUnavailable(f"{what}: cannot read its ONNX file: {reason}") from exc


@router.get("/v1/models/{model_id:path}/details", tags=["ui"])
async def model_details(model_id: str, request: Request, version: str | None = None) -> Response:
    """Versions with their state, and the inspect report (IO, parameters, opsets, ops, card) of one."""
    model, chosen = _model_and_version(request, model_id, version)
    body: JSON = {
        "object": "model.details",
        "id": model.name,
        "task": model.task.value if model.task else "",
        "ready": model.ready,
        "versions": [
            {"version": v.version, "state": v.state.value, "reason": v.reason or None}
            for v in sorted(model.versions.values(), key=_order)
        ],
        "version": chosen.version,
        "inspect": None,
        "inspect_error": None,
    }
    try:
        body["inspect"] = await _read(model.name, chosen, functools.partial(_describe, chosen.path))
    except ModelUnavailable as exc:  # an unreadable file is part of the answer, as a failed load is
        body["inspect_error"] = exc.message
    return json_response(body)


@router.get("/v1/models/{model_id:path}/graph", tags=["ui"])
async def model_graph(model_id: str, request: Request, version: str | None = None) -> Response:
    """The graph as ``onnxkit view --output g.svg`` draws it (image/svg+xml; gzip when accepted)."""
    model, chosen = _model_and_version(request, model_id, version)
    svg, packed = await _read(model.name, chosen, functools.partial(_graph, chosen.path))
    headers = {"cache-control": "no-cache", "vary": "accept-encoding", **SECURITY_HEADERS}
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(packed, media_type="image/svg+xml", headers={**headers, "content-encoding": "gzip"})
    return Response(svg, media_type="image/svg+xml", headers=headers)
