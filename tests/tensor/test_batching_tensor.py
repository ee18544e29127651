"""Dynamic batching of tensor requests: merged under load, split back exactly, bounded, cancellable."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import tritonclient.grpc as tg
from tensor_fixtures import RepoFactory, metric
from tritonclient.utils import InferenceServerException

from onnxkit.serve.server import Server

CLIENTS = 16


def v2(name: str, datatype: str, array: np.ndarray) -> dict[str, object]:
    return {
        "inputs": [{"name": name, "datatype": datatype, "shape": list(array.shape), "data": array.ravel().tolist()}]
    }


def run_concurrently(url: str, bodies: list[dict[str, object]]) -> list[httpx.Response]:
    def one(body: dict[str, object]) -> httpx.Response:
        with httpx.Client(timeout=30) as c:
            return c.post(url, json=body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


def batches(url: str, model: str) -> tuple[float, float, float]:
    """(batches run, requests in them, batches of exactly one request)."""
    text = httpx.get(url + "/metrics").text
    return (
        metric(text, "onnxkit_batch_size_count", model=model),
        metric(text, "onnxkit_batch_size_sum", model=model),
        metric(text, "onnxkit_batch_size_bucket", model=model, le="1.0"),
    )


def test_concurrent_requests_are_merged_and_equal_unbatched(
    make_repository: RepoFactory, model_files: dict[str, Path]
) -> None:
    config = "max_batch_size: 32\ndynamic_batching: {max_queue_delay_ms: 50}\n"
    repo = make_repository(mlp_batched=[1], configs={"mlp_batched": config})
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((1 + i % 3, 4)).astype(np.float32) for i in range(CLIENTS)]
    session = ort.InferenceSession(str(model_files["mlp"]), providers=["CPUExecutionProvider"])
    expected = [session.run(None, {"x": x})[0] for x in xs]  # the same requests, one at a time
    with Server([], port=0, repositories=(str(repo),)) as s:
        url = s.url + "/v2/models/mlp_batched/infer"
        replies = run_concurrently(url, [v2("x", "FP32", x) for x in xs])
        count, total, singles = batches(s.url, "mlp_batched")
    for reply, x, want in zip(replies, xs, expected, strict=True):
        assert reply.status_code == 200, reply.text
        (out,) = reply.json()["outputs"]
        assert out["shape"] == [x.shape[0], 3]
        np.testing.assert_allclose(np.array(out["data"], np.float32).reshape(want.shape), want, rtol=1e-6, atol=1e-6)
    assert total == CLIENTS
    assert count < CLIENTS, f"{CLIENTS} requests ran in {count} batches: none were merged"
    assert singles < count or count == 1


def test_unpaddable_shapes_batch_only_with_their_own_shape(make_repository: RepoFactory) -> None:
    config = "max_batch_size: 16\ndynamic_batching: {max_queue_delay_ms: 50}\n"
    repo = make_repository(ints_shapes=[1], configs={"ints_shapes": config})
    arrays = [np.arange(1, 1 + (2 + i % 2), dtype=np.int64)[None, :] * (i + 1) for i in range(8)]
    with Server([], port=0, repositories=(str(repo),)) as s:
        replies = run_concurrently(s.url + "/v2/models/ints_shapes/infer", [v2("ids", "INT64", a) for a in arrays])
        count, total, _ = batches(s.url, "ints_shapes")
    for reply, a in zip(replies, arrays, strict=True):
        assert reply.status_code == 200, reply.text
        outs = {o["name"]: o for o in reply.json()["outputs"]}
        assert outs["doubled"]["shape"] == list(a.shape)
        assert outs["doubled"]["data"] == (a * 2).ravel().tolist()
        assert outs["total"]["data"] == [int(a.sum())]
    assert total == 8 and 2 <= count < 8  # two shapes: at least two batches, and some merging


def test_padding_merges_variable_lengths_when_enabled(make_repository: RepoFactory) -> None:
    config = "max_batch_size: 16\ndynamic_batching: {max_queue_delay_ms: 50, pad_variable_dims: true}\n"
    repo = make_repository(ints_pad=[1], configs={"ints_pad": config})
    arrays = [np.arange(1, 2 + i, dtype=np.int64)[None, :] for i in range(6)]  # lengths 1..6
    with Server([], port=0, repositories=(str(repo),)) as s:
        replies = run_concurrently(s.url + "/v2/models/ints_pad/infer", [v2("ids", "INT64", a) for a in arrays])
        count, total, _ = batches(s.url, "ints_pad")
    for reply, a in zip(replies, arrays, strict=True):
        assert reply.status_code == 200, reply.text
        outs = {o["name"]: o for o in reply.json()["outputs"]}
        assert outs["doubled"]["shape"] == list(a.shape)  # padding sliced back off
        assert outs["doubled"]["data"] == (a * 2).ravel().tolist()
        assert outs["total"]["data"] == [int(a.sum())]
    assert total == 6 and count < 6


def test_full_queue_is_429_and_resource_exhausted(make_repository: RepoFactory) -> None:
    # The first request waits out the delay in the queue (not a full batch); the queue holds one.
    config = "max_batch_size: 8\ndynamic_batching: {max_queue_delay_ms: 300, max_queue_size: 1}\n"
    repo = make_repository(mlp_full=[1], configs={"mlp_full": config})
    x = np.ones((1, 4), np.float32)
    with Server([], port=0, repositories=(str(repo),), grpc_port=0) as s:
        replies = run_concurrently(s.url + "/v2/models/mlp_full/infer", [v2("x", "FP32", x)] * 6)
        codes = sorted(r.status_code for r in replies)
        assert 429 in codes and 200 in codes, codes
        rejected = next(r for r in replies if r.status_code == 429)
        assert "'mlp_full'" in rejected.json()["error"] and "queued" in rejected.json()["error"]

        client = tg.InferenceServerClient(f"127.0.0.1:{s.grpc_port}")

        def grpc_infer(_: int) -> str:
            inp = tg.InferInput("x", [1, 4], "FP32")
            inp.set_data_from_numpy(x)
            try:
                client.infer("mlp_full", [inp])
            except InferenceServerException as exc:
                return str(exc.status())
            return "OK"

        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(grpc_infer, range(6)))
        assert "StatusCode.RESOURCE_EXHAUSTED" in statuses and "OK" in statuses, statuses


def test_requests_cancelled_while_queued_are_skipped(
    make_repository: RepoFactory, model_files: dict[str, Path]
) -> None:
    config = "max_batch_size: 8\ndynamic_batching: {max_queue_delay_ms: 200}\n"
    repo = make_repository(mlp_cancel=[1], configs={"mlp_cancel": config})
    x = np.ones((1, 4), np.float32)
    bodies = [json.dumps(v2("x", "FP32", x * (i + 1))).encode() for i in range(3)]
    with Server([], port=0, repositories=(str(repo),)) as s:
        url = s.url + "/v2/models/mlp_cancel/infer"
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(httpx.post, url, content=bodies[0], timeout=30)
            time.sleep(0.02)
            # the second request's client gives up while it is queued: its request is cancelled
            request = (
                f"POST /v2/models/mlp_cancel/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(bodies[1])}\r\n\r\n"
            ).encode() + bodies[1]
            with socket.create_connection(("127.0.0.1", s.port)) as leaver:
                leaver.sendall(request)
                time.sleep(0.02)
            third = pool.submit(httpx.post, url, content=bodies[2], timeout=30)
            answers = [first.result(), third.result()]
        text = httpx.get(s.url + "/metrics").text
    session = ort.InferenceSession(str(model_files["mlp"]))
    for answer, scale in zip(answers, (1, 3), strict=True):
        assert answer.status_code == 200, answer.text
        (out,) = answer.json()["outputs"]
        expected = session.run(None, {"x": x * scale})[0]
        np.testing.assert_allclose(np.asarray(out["data"], np.float32).reshape(out["shape"]), expected, rtol=1e-6)
    assert metric(text, "onnxkit_batch_size_count", model="mlp_cancel") == 1
    assert metric(text, "onnxkit_batch_size_sum", model="mlp_cancel") == 2  # the cancelled one never ran


def test_a_client_that_leaves_while_queued_is_never_run(make_repository: RepoFactory) -> None:
    config = "max_batch_size: 8\ndynamic_batching: {max_queue_delay_ms: 400}\n"
    repo = make_repository(mlp_leave=[1], configs={"mlp_leave": config})
    body = json.dumps(v2("x", "FP32", np.ones((1, 4), np.float32))).encode()
    with Server([], port=0, repositories=(str(repo),)) as s:
        request = (
            f"POST /v2/models/mlp_leave/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        with socket.create_connection(("127.0.0.1", s.port)) as leaver:
            leaver.sendall(request)
            time.sleep(0.1)  # queued, waiting for companions
        stayed = httpx.post(s.url + "/v2/models/mlp_leave/infer", content=body)
        assert stayed.status_code == 200
        count, total, _ = batches(s.url, "mlp_leave")
        text = httpx.get(s.url + "/metrics").text
    assert (count, total) == (1, 1)  # one batch, holding only the request that stayed
    assert metric(text, "onnxkit_requests_total", model="mlp_leave", outcome="success") == 1
