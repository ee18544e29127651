"""Class 7: body limits hold for chunked bodies too: a 413 naming the limit."""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from .conftest import BODY_LIMIT, Served


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    yield b'{"model": "tiny-embed", "input": ["'
    sent = 0
    while sent < total:
        yield b"a" * size
        sent += size
    yield b'"]}'


def test_a_chunked_body_over_the_limit_is_413(hard_server: Served) -> None:
    for path in ("/v1/embeddings", "/v2/models/mlp/infer", "/v1/models/mlp:predict"):
        r = httpx.post(hard_server.url + path, content=_chunks(2 * BODY_LIMIT), timeout=60,
                       headers={"content-type": "application/json"})  # fmt: skip
        assert r.status_code == 413, (path, r.text[:200])
        body = r.json()["error"]
        message = body["message"] if isinstance(body, dict) else body
        assert str(BODY_LIMIT) in message and "--max-body-bytes" in message


def test_a_chunked_body_under_the_limit_is_served(hard_server: Served) -> None:
    r = httpx.post(hard_server.url + "/v1/embeddings", content=_chunks(10 * 1024), timeout=60,
                   headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code in (200, 400), r.text  # one long word: served, or refused as too long for the model
    if r.status_code == 400:
        assert "tokens" in r.json()["error"]["message"]
