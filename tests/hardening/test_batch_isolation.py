"""Class 1: one bad item never fails an innocent request merged into the same batch."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import numpy as np

from .conftest import Probe, Served, error_of


def _embed(url: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(url + "/v1/embeddings", json=body, timeout=60)


def test_bad_embedding_inputs_fail_alone(hard_server: Served, alongside: Callable[..., Probe]) -> None:
    url = hard_server.url
    bad_bodies = [
        (b'{"model": "tiny-embed", "input": ["fine", "\\ud800"]}', "surrogate"),  # a lone surrogate
        (b'{"model": "tiny-embed", "input": [[2, 99999999999999999999999, 3]]}', "token id"),  # above int64
        (b'{"model": "tiny-embed", "input": [[2, 100000, 3]]}', "token id 100000"),  # beyond the vocabulary
        (b'{"model": "tiny-embed", "input": [[2, -4, 3]]}', "holds -4, not a token id"),
    ]
    for body, needle in bad_bodies:
        answers: list[httpx.Response] = []

        def bad(body: bytes = body, answers: list[httpx.Response] = answers) -> None:
            answers.append(httpx.post(url + "/v1/embeddings", content=body, timeout=60,
                                      headers={"content-type": "application/json"}))  # fmt: skip

        alongside(bad, lambda: _embed(url, {"model": "tiny-embed", "input": ["an innocent text"] * 3}))
        assert answers[0].status_code == 400, answers[0].text
        assert needle in error_of(answers[0]), error_of(answers[0])


def test_an_absurd_padded_dim_fails_alone(hard_server: Served, alongside: Callable[..., Probe]) -> None:
    """pad: batched (50 ms window) with pad_variable_dims. A shape [0, 10^9] claims no data but would pad its
    companions to 10^9 columns: it is refused by the element bound before anything is allocated."""
    url = hard_server.url + "/v2/models/pad/infer"
    absurd = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [0, 10**9], "data": []}]}
    small = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [4, 2], "data": [0.5] * 8}]}
    answers: list[httpx.Response] = []
    alongside(lambda: answers.append(httpx.post(url, json=absurd, timeout=60)),
              lambda: httpx.post(url, json=small, timeout=60))  # fmt: skip
    assert answers[0].status_code == 413, answers[0].text
    assert "max_tensor_elements" in error_of(answers[0])


def test_requests_too_wide_to_pad_together_run_apart(hard_server: Served, alongside: Callable[..., Probe]) -> None:
    """[1, 90000] and [4, 2] are each within the bound; padded together (5 x 90000) they are not: both run,
    one after the other, and both are answered."""
    url = hard_server.url + "/v2/models/pad/infer"
    wide = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 90000], "data": [1.0] * 90000}]}
    small = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [4, 2], "data": [0.5] * 8}]}
    answers: list[httpx.Response] = []
    alongside(lambda: answers.append(httpx.post(url, json=wide, timeout=60)),
              lambda: httpx.post(url, json=small, timeout=60))  # fmt: skip
    assert answers[0].status_code == 200, answers[0].text
    out = answers[0].json()["outputs"][0]
    assert out["shape"] == [1, 90000] and np.allclose(out["data"][:3], 2.0)


def test_a_failing_merged_run_is_rerun_apart(hard_server: Served) -> None:
    """Two requests merged into one embeddings batch, one of them too long for the model: only it fails."""
    import threading

    url = hard_server.url
    results: dict[str, httpx.Response] = {}

    def send(key: str, body: dict[str, object]) -> None:
        results[key] = _embed(url, body)

    threads = [
        threading.Thread(target=send, args=("bad", {"model": "tiny-embed", "input": ["paris " * 200]})),
        threading.Thread(target=send, args=("good", {"model": "tiny-embed", "input": ["paris is nice"]})),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["good"].status_code == 200
    assert results["bad"].status_code == 400 and "at most" in error_of(results["bad"])
