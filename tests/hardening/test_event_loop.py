"""Class 4: per-request work that grows with the input runs in a worker; /health stays fast meanwhile."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx

from .conftest import BODY_LIMIT, Probe, Served, error_of


def _send(url: str, path: str, body: bytes) -> httpx.Response:
    return httpx.post(url + path, content=body, headers={"content-type": "application/json"}, timeout=120)


def test_large_bodies_leave_the_event_loop_free(hard_server: Served, alongside: Callable[..., Probe]) -> None:
    url = hard_server.url
    text = "paris is a city in france " * 36_000  # ~0.9 MB of text: tokenizing it takes a while
    bodies = [
        ("/v1/embeddings", {"model": "tiny-embed", "input": text, "truncate": True}, 200),
        ("/v1/embeddings", {"model": "tiny-embed", "input": text}, 400),  # too long, found after tokenizing
        ("/v1/completions", {"model": "tiny-chat", "prompt": text, "max_tokens": 1}, 400),  # over the context
        ("/v1/classify", {"model": "tiny-cls", "input": text}, 200),  # cut at the model's max_length
    ]
    for path, body, status in bodies:
        raw = json.dumps(body).encode()
        assert len(raw) < BODY_LIMIT
        answers: list[httpx.Response] = []
        alongside(lambda path=path, raw=raw, answers=answers: answers.append(_send(url, path, raw)),
                  lambda: httpx.post(url + "/v1/embeddings", json={"model": "tiny-embed", "input": "x"}, timeout=60))
        assert answers[0].status_code == status, (path, answers[0].text[:300])
        if status == 400:
            assert "tokens" in error_of(answers[0])


def test_a_large_tensor_body_leaves_the_event_loop_free(hard_server: Served, alongside: Callable[..., Probe]) -> None:
    url = hard_server.url
    rows = 24_000
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 4], "data": [0.25] * (rows * 4)}]}
    answers: list[httpx.Response] = []
    alongside(lambda: answers.append(httpx.post(url + "/v2/models/mlp/infer", json=body, timeout=120)))
    assert answers[0].status_code == 400  # mlp batches at most 4 rows: refused after decoding, off the loop
    assert "max_batch_size" in error_of(answers[0])
