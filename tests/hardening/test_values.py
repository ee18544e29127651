"""Class 5: values outside what the runtime accepts are a 400 naming them, never a 500 or library internals."""

from __future__ import annotations

import httpx
import pytest

from .conftest import Served, error_of

MSG = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"messages": MSG, "top_k": 99999999999}, "top_k"),
        ("/v1/chat/completions", {"messages": MSG, "top_p": 0}, "top_p"),
        ("/v1/chat/completions", {"messages": MSG, "temperature": -1}, "temperature"),
        ("/v1/chat/completions", {"messages": MSG, "seed": 2**64}, "seed"),
        ("/v1/chat/completions", {"messages": MSG, "max_tokens": 0}, "max_tokens"),
        ("/v1/chat/completions", {"messages": MSG, "n": 0}, "n"),
        ("/v1/chat/completions", {"messages": []}, "messages"),
        ("/v1/completions", {"prompt": ""}, "prompt"),
        ("/v1/completions", {"prompt": ["fine", ""]}, "prompt[1]"),
        ("/v1/completions", {"prompt": []}, "prompt"),
        ("/v1/embeddings", {"input": ""}, "input"),
        ("/v1/embeddings", {"input": [[]]}, "input"),
    ],
)
def test_out_of_range_values_are_400(hard_server: Served, path: str, body: dict[str, object], param: str) -> None:
    bound = {} if path == "/v1/embeddings" else {"max_tokens": 4}  # embeddings refuse a field they do not honour
    r = httpx.post(hard_server.url + path, json={**bound, **body}, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param.split("[")[0] or param in err["message"], err
    assert "pybind" not in err["message"] and "C++" not in err["message"]


def test_large_seeds_are_honoured_within_the_runtime(hard_server: Served) -> None:
    """OpenAI's seed is 64-bit; onnxruntime-genai's 32-bit. The same large seed gives the same text twice."""
    body = {"messages": MSG, "max_tokens": 12, "temperature": 1.0, "seed": 2**62 + 12345}
    texts = [httpx.post(hard_server.url + "/v1/chat/completions", json=body, timeout=60).json()
             ["choices"][0]["message"]["content"] for _ in range(2)]  # fmt: skip
    assert texts[0] == texts[1]


def test_text_that_is_not_unicode_is_400(hard_server: Served) -> None:
    for raw in (b'{"messages": [{"role": "user", "content": "\\udc80"}]}', b'{"input": "\xff\xfe"}'):
        path = "/v1/chat/completions" if b"messages" in raw else "/v1/embeddings"
        r = httpx.post(hard_server.url + path, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "UTF-8" in error_of(r), r.text
