"""Triton's statistics extension (REST /v2/models[/m[/versions/v]]/stats, gRPC ModelStatistics) via tritonclient."""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from google.protobuf import json_format
from tensor_fixtures import RepoFactory, Served
from tritonclient.grpc import service_pb2 as triton_service
from tritonclient.utils import InferenceServerException

from onnxkit.serve.server import Server

Stat = dict[str, Any]
DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


def _http_stats(client: th.InferenceServerClient, model: str = "", version: str = "") -> list[Stat]:
    stats: list[Stat] = client.get_inference_statistics(model, version)["model_stats"]
    return stats


def _grpc_stats(client: tg.InferenceServerClient, model: str = "", version: str = "") -> list[Stat]:
    """The ModelStatisticsResponse (parsed by tritonclient's own protos) as the REST JSON would be."""
    response = client.get_inference_statistics(model, version)
    assert isinstance(response, triton_service.ModelStatisticsResponse)
    out = []
    for s in response.model_stats:
        inference = {
            k: {"count": getattr(s.inference_stats, k).count, "ns": getattr(s.inference_stats, k).ns}
            for k in (*DURATIONS, "cache_hit", "cache_miss")
        }
        batches = [
            {
                "batch_size": b.batch_size,
                **{k: {"count": getattr(b, k).count, "ns": getattr(b, k).ns} for k in DURATIONS[3:]},
            }
            for b in s.batch_stats
        ]
        out.append(
            {
                "name": s.name,
                "version": s.version,
                "last_inference": s.last_inference,
                "inference_count": s.inference_count,
                "execution_count": s.execution_count,
                "inference_stats": inference,
                "batch_stats": batches,
            }
        )
    return out


def _one(stats: list[Stat]) -> Stat:
    assert len(stats) == 1, stats
    return stats[0]


def _batch(stat: Stat, size: int) -> Stat:
    found = [b for b in stat["batch_stats"] if b["batch_size"] == size]
    return found[0] if found else {k: {"count": 0, "ns": 0} for k in DURATIONS[3:]}


def _rows(n: int) -> np.ndarray:
    return np.linspace(-1, 1, 4 * n, dtype=np.float32).reshape(n, 4)


@pytest.fixture(scope="module")
def http_client(served: Served) -> th.InferenceServerClient:
    return th.InferenceServerClient(served.http_address)


@pytest.fixture(scope="module")
def grpc_client(served: Served) -> tg.InferenceServerClient:
    return tg.InferenceServerClient(served.grpc_address)


def _infer(client: th.InferenceServerClient | tg.InferenceServerClient, x: np.ndarray, version: str = "1") -> None:
    module: Any = th if isinstance(client, th.InferenceServerClient) else tg
    inp = module.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    client.infer("mlp", [inp], model_version=version)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_counts_go_up_by_what_was_sent(
    protocol: str, http_client: th.InferenceServerClient, grpc_client: tg.InferenceServerClient
) -> None:
    sender = http_client if protocol == "http" else grpc_client
    before = _one(_http_stats(http_client, "mlp", "1"))
    started_ms = time.time_ns() // 1_000_000
    for _ in range(3):
        _infer(sender, _rows(2))
    with pytest.raises(InferenceServerException):  # 5 columns: the model takes 4
        _infer(sender, np.ones((2, 5), np.float32))
    ended_ms = time.time_ns() // 1_000_000
    after = _one(_http_stats(http_client, "mlp", "1"))
    # Both transports report the same counters.
    assert _one(_grpc_stats(grpc_client, "mlp", "1")) == after

    def delta(key: str, field: str = "count") -> int:
        return int(after["inference_stats"][key][field] - before["inference_stats"][key][field])

    assert (after["name"], after["version"]) == ("mlp", "1")
    assert after["inference_count"] - before["inference_count"] == 6  # rows
    assert after["execution_count"] - before["execution_count"] == 3  # one runtime call each, sent one by one
    assert delta("success") == 3
    assert delta("fail") == 1
    assert delta("success", "ns") > 0 and delta("fail", "ns") > 0
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert delta(key) == 3, key  # per successful request, as Triton counts
    assert delta("compute_infer", "ns") > 0
    assert after["inference_stats"]["cache_hit"] == {"count": 0, "ns": 0}
    assert started_ms <= after["last_inference"] <= ended_ms
    assert _batch(after, 2)["compute_infer"]["count"] - _batch(before, 2)["compute_infer"]["count"] == 3


def test_a_merged_batch_is_one_execution(make_repository: RepoFactory) -> None:
    # The batch fills (4 requests x 2 rows = max_batch_size 8) long before the delay runs out.
    config = "max_batch_size: 8\ndynamic_batching: {max_queue_delay_ms: 3000}\n"
    flat = "max_batch_size: 0\n"
    repo = make_repository(mlp_merge=[1], ints_flat=[1], configs={"mlp_merge": config, "ints_flat": flat})
    with Server([], port=0, repositories=(str(repo),), grpc_port=0) as s:
        http_client = th.InferenceServerClient(s.url.removeprefix("http://"), concurrency=4)
        pending = []
        for i in range(4):  # four connections at once (tritonclient.http's async_infer)
            inp = th.InferInput("x", [2, 4], "FP32")
            inp.set_data_from_numpy(_rows(2) * i)
            pending.append(http_client.async_infer("mlp_merge", [inp]))
        for request in pending:
            assert request.get_result().as_numpy("logits").shape == (2, 3)
        stat = _one(_http_stats(http_client, "mlp_merge"))
        assert (stat["inference_count"], stat["execution_count"]) == (8, 1)
        inference = stat["inference_stats"]
        assert {k: inference[k]["count"] for k in DURATIONS} == {
            "success": 4, "fail": 0, "queue": 4, "compute_input": 4, "compute_infer": 4, "compute_output": 4,
        }  # fmt: skip
        assert inference["compute_input"]["ns"] > 0  # concatenating four requests' rows
        assert inference["queue"]["ns"] > 0
        assert [(b["batch_size"], b["compute_infer"]["count"]) for b in stat["batch_stats"]] == [(8, 1)]

        # Without batching a request is one inference whatever its rows (Triton's max_batch_size 0).
        grpc_client = tg.InferenceServerClient(f"127.0.0.1:{s.grpc_port}")
        for _ in range(2):
            ids = tg.InferInput("ids", [2, 3], "INT64")
            ids.set_data_from_numpy(np.ones((2, 3), np.int64))
            grpc_client.infer("ints_flat", [ids])
        flat_stat = _one(_grpc_stats(grpc_client, "ints_flat", "1"))
        assert (flat_stat["inference_count"], flat_stat["execution_count"]) == (2, 2)
        assert flat_stat["inference_stats"]["success"]["count"] == 2


def test_listing_every_model_one_model_and_one_version(
    http_client: th.InferenceServerClient, grpc_client: tg.InferenceServerClient
) -> None:
    for read in (lambda *a: _http_stats(http_client, *a), lambda *a: _grpc_stats(grpc_client, *a)):
        every = {(s["name"], s["version"]) for s in read()}
        # Ready tensor models only: the corrupt 'broken' has nothing loaded to count.
        assert every == {("mlp", "1"), ("mlp", "2"), ("ints", "1"), ("strings", "1"), ("half", "1")}
        assert [(s["name"], s["version"]) for s in read("mlp")] == [("mlp", "1"), ("mlp", "2")]
        assert [(s["name"], s["version"]) for s in read("mlp", "2")] == [("mlp", "2")]


def test_versions_count_separately(
    http_client: th.InferenceServerClient, grpc_client: tg.InferenceServerClient
) -> None:
    v1, v2 = _http_stats(http_client, "mlp")
    _infer(grpc_client, _rows(3), version="2")
    w1, w2 = _http_stats(http_client, "mlp")
    assert w1 == v1
    assert w2["inference_count"] - v2["inference_count"] == 3


def test_as_json_has_the_same_numbers(
    grpc_client: tg.InferenceServerClient, http_client: th.InferenceServerClient
) -> None:
    as_json = grpc_client.get_inference_statistics("mlp", "1", as_json=True)["model_stats"][0]
    http = _one(_http_stats(http_client, "mlp", "1"))
    parsed = json_format.ParseDict({"model_stats": [as_json]}, triton_service.ModelStatisticsResponse())
    assert json_format.ParseDict({"model_stats": [http]}, triton_service.ModelStatisticsResponse()) == parsed
    assert int(as_json["inference_count"]) == http["inference_count"] > 0


def test_unknown_model_is_not_found(
    served: Served, http_client: th.InferenceServerClient, grpc_client: tg.InferenceServerClient
) -> None:
    reply = httpx.get(served.url + "/v2/models/nope/stats")
    assert reply.status_code == 404
    assert "'nope'" in reply.json()["error"]
    assert httpx.get(served.url + "/v2/models/mlp/versions/9/stats").status_code == 404
    assert httpx.get(served.url + "/v2/models/broken/stats").status_code == 503
    with pytest.raises(InferenceServerException) as http_err:
        http_client.get_inference_statistics("nope")
    assert http_err.value.status() == "404"
    with pytest.raises(InferenceServerException) as grpc_err:
        grpc_client.get_inference_statistics("nope")
    assert grpc_err.value.status() == "StatusCode.NOT_FOUND"
    assert "'nope'" in grpc_err.value.message()
    with pytest.raises(InferenceServerException) as grpc_version:
        grpc_client.get_inference_statistics("mlp", "9")
    assert grpc_version.value.status() == "StatusCode.NOT_FOUND"


def test_server_metadata_names_the_extension(
    http_client: th.InferenceServerClient, grpc_client: tg.InferenceServerClient
) -> None:
    assert "statistics" in http_client.get_server_metadata()["extensions"]
    assert "statistics" in grpc_client.get_server_metadata().extensions
