"""``onnxkit serve --ray ADDRESS``: two replicas on the session's two-node cluster, through Ray's proxies.

One deployment for the module, started as a user would (``--detach``) and stopped with
``onnxkit stop``: the tiny chat and embedding models and an MLP repository, model files copied
through the object store (``--ray-models object-store``), KServe v2 gRPC on Ray's gRPC proxy.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnx
import openai
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from cluster_fixtures import RayCluster, free_port
from onnx import TensorProto, helper, numpy_helper

from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import Server

W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
WIDE = 300_000


def mlp_repository(root: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["logits"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(W, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    (root / "mlp" / "1").mkdir(parents=True)
    onnx.save(model, str(root / "mlp" / "1" / "model.onnx"))
    (root / "mlp" / "config.yaml").write_text("max_batch_size: 0\n")  # any number of rows per request
    # "wide": x tiled WIDE times, an answer larger than one of Ray's gRPC messages (4 MiB) from a small request
    tile = helper.make_graph(
        [helper.make_node("Tile", ["x", "repeats"], ["y"])], "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4 * WIDE])],
        [numpy_helper.from_array(np.array([1, WIDE], dtype=np.int64), "repeats")],
    )
    wide = helper.make_model(tile, opset_imports=[helper.make_opsetid("", 17)])
    wide.ir_version = 9
    (root / "wide" / "1").mkdir(parents=True)
    onnx.save(wide, str(root / "wide" / "1" / "model.onnx"))
    (root / "wide" / "config.yaml").write_text("max_batch_size: 0\n")
    return root


@dataclass(frozen=True)
class Deployment:
    url: str
    port: int
    grpc: str
    driver_pid: int


@pytest.fixture(scope="module")
def deployment(ray_cluster: RayCluster, tiny_chat_model: Path, tiny_embed_model: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    repo = mlp_repository(tmp_path_factory.mktemp("ray-repo"))
    port, grpc_port = ray_cluster.serve_port, free_port()
    ray_cluster.shutdown_serve()  # a Serve an earlier test left would keep its own options (no gRPC proxy)
    started = ray_cluster.onnxkit(
        "serve", str(tiny_chat_model), str(tiny_embed_model), "--repository", str(repo),
        "--ray", ray_cluster.address, "--replicas", "2", "--ray-models", "object-store",
        "--port", str(port), "--grpc-port", str(grpc_port), "--detach",
    )
    assert started.returncode == 0, started.stderr + started.stdout
    url = f"http://127.0.0.1:{port}"
    try:
        health = httpx.get(url + "/health", timeout=10).json()
        yield Deployment(url=url, port=port, grpc=f"127.0.0.1:{grpc_port}", driver_pid=int(health["pid"]))
    finally:
        stopped = ray_cluster.onnxkit("stop", "--port", str(port), timeout=120)
        assert stopped.returncode == 0, stopped.stderr


def test_models_came_through_the_object_store(deployment: Deployment, ray_cluster: RayCluster) -> None:
    # --ray-models object-store: each node took its copy out of the object store, checked and renamed
    landed = sorted(p.name.rsplit("-", 1)[0] for p in (ray_cluster.home / "ray-models").iterdir()
                    if not p.name.startswith("."))
    assert landed == ["ray-repo0", "tiny-chat", "tiny-embed"]


def test_health_names_the_driver_and_every_replica(deployment: Deployment) -> None:
    health = httpx.get(deployment.url + "/health", timeout=10).json()
    assert health["status"] == "ok" and health["server"] == "onnxkit"
    assert health["replicas"] == {"RUNNING": 2}
    assert health["pid"] == deployment.driver_pid != health["replica_pid"]
    # the two replicas are two processes, one on each node of the cluster
    pids = {httpx.get(deployment.url + "/health", timeout=10).json()["replica_pid"] for _ in range(40)}
    assert len(pids) == 2


def test_openai_sdk_chat_and_embeddings(deployment: Deployment, tiny_embed_model: Path) -> None:
    client = openai.OpenAI(base_url=deployment.url + "/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model="tiny-chat", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8, temperature=0
    )
    assert reply.choices[0].message.role == "assistant" and reply.usage is not None
    assert 0 < reply.usage.completion_tokens <= 8
    texts = ["The capital of France is Paris.", "A quick brown fox."]
    vectors = client.embeddings.create(model="tiny-embed", input=texts)  # base64, as the SDK asks by default
    with Server([ModelSpec("tiny-embed", tiny_embed_model)], port=0) as plain:
        local = openai.OpenAI(base_url=plain.url + "/v1", api_key="unused", max_retries=0)
        want = local.embeddings.create(model="tiny-embed", input=texts)
    for got, expected in zip(vectors.data, want.data, strict=True):
        np.testing.assert_allclose(got.embedding, expected.embedding, atol=1e-6)
    with pytest.raises(openai.BadRequestError) as bad:
        client.embeddings.create(model="tiny-embed", input=[])
    assert bad.value.body["param"] == "input"  # type: ignore[index]


def test_kserve_rest_and_grpc_with_tritonclient(deployment: Deployment) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    want = np.maximum(x @ W, 0)
    rest = httpclient.InferenceServerClient(deployment.url.removeprefix("http://"))
    inp = httpclient.InferInput("x", [2, 4], "FP32")
    inp.set_data_from_numpy(x)
    np.testing.assert_allclose(rest.infer("mlp", [inp]).as_numpy("logits"), want, rtol=1e-6)
    assert rest.is_model_ready("mlp") and rest.get_model_metadata("mlp")["inputs"][0]["name"] == "x"
    grpc = grpcclient.InferenceServerClient(deployment.grpc)
    assert grpc.is_server_live() and grpc.is_model_ready("mlp")
    ginp = grpcclient.InferInput("x", [2, 4], "FP32")
    ginp.set_data_from_numpy(x)
    np.testing.assert_allclose(grpc.infer("mlp", [ginp]).as_numpy("logits"), want, rtol=1e-6)
    bad = grpcclient.InferInput("x", [2, 5], "FP32")
    bad.set_data_from_numpy(np.ones((2, 5), np.float32))
    with pytest.raises(Exception, match="INVALID_ARGUMENT") as err:
        grpc.infer("mlp", [bad])
    assert "[2, 5]" in str(err.value)


def test_tfserving_task_routes_and_metrics(deployment: Deployment) -> None:
    r = httpx.post(deployment.url + "/v1/models/mlp:predict", json={"instances": [[1, 2, 3, 4]]}, timeout=30)
    assert r.status_code == 200
    np.testing.assert_allclose(r.json()["predictions"], np.maximum(np.array([[1, 2, 3, 4.0]]) @ W, 0), rtol=1e-6)
    bad = httpx.post(deployment.url + "/v2/models/mlp/infer", json={"inputs": []}, timeout=30)
    assert bad.status_code == 400 and isinstance(bad.json()["error"], str)  # KServe's own error shape
    missing = httpx.get(deployment.url + "/v1/models/nope", timeout=30)
    assert missing.status_code == 404
    assert "onnxkit_" in httpx.get(deployment.url + "/metrics", timeout=30).text


def _replica_pids(url: str, tries: int = 60) -> set[int]:
    return {httpx.get(url + "/health", timeout=10).json()["replica_pid"] for _ in range(tries)}


async def _load_and_kill(url: str, victim: int, seconds: float = 6.0) -> list[tuple[str, int, object]]:
    """16 clients keep slow requests in flight on both replicas (OpenAI embeddings of 2000 texts, KServe
    infers of 20,000 rows); one replica is killed a third of the way through."""
    embeddings = json.dumps({"model": "tiny-embed", "input": [f"sentence {i} about the weather" for i in range(2000)]})
    rows = 20_000
    kserve = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 4], "data": [0.5] * (rows * 4)}]})
    results: list[tuple[str, int, object]] = []
    started = time.monotonic()

    async with httpx.AsyncClient(base_url=url, timeout=120, headers={"content-type": "application/json"}) as client:
        async def keep_sending(i: int) -> None:
            kind, path, body = ("kserve", "/v2/models/mlp/infer", kserve) if i % 4 == 0 else (
                "openai", "/v1/embeddings", embeddings)
            while time.monotonic() - started < seconds:
                r = await client.post(path, content=body)
                results.append((kind, r.status_code, r.json()))

        clients = [asyncio.create_task(keep_sending(i)) for i in range(16)]
        await asyncio.sleep(seconds / 3)
        os.kill(victim, signal.SIGKILL)  # a replica of the cluster this session started
        await asyncio.gather(*clients)
    return results


def _wait_for_handle_path(url: str) -> None:
    deadline = time.monotonic() + 20
    while (health := httpx.get(url + "/health", timeout=10).json())["ray_path"] != "handle":
        assert time.monotonic() < deadline, f"requests still take Ray Serve's own HTTP path: {health}"
        time.sleep(0.5)


def _wait_until_replaced(url: str, victim: int) -> set[int]:
    """Ray starts a new replica; the service answers meanwhile and is whole again within a bounded wait."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        health = httpx.get(url + "/health", timeout=10)
        if health.status_code == 200 and victim not in (pids := _replica_pids(url, 20)) and len(pids) == 2:
            return pids
        time.sleep(1)
    pytest.fail(f"the killed replica was not replaced within 120 s: {health.json()}")


def test_a_killed_replica_fails_its_requests_with_503_and_is_replaced(deployment: Deployment) -> None:
    _wait_for_handle_path(deployment.url)  # the steady state: requests go to replicas in one handle call
    pids = _replica_pids(deployment.url)
    assert len(pids) == 2
    lost: list[tuple[str, object]] = []
    # A kill can land while the victim holds no request it has acknowledged: the router then sends the
    # unacknowledged ones to the other replica (200s, no 503). So up to two kills, one per replica.
    for _ in range(2):
        victim = min(pids)
        results = asyncio.run(_load_and_kill(deployment.url, victim))
        assert {status for _, status, _ in results} <= {200, 503}, results
        lost = [(kind, body) for kind, status, body in results if status == 503]
        assert len(lost) < len(results)  # the other replica went on answering
        pids = _wait_until_replaced(deployment.url, victim)
        if lost:
            break
    assert lost, "no request was on either killed replica"
    for kind, body in lost:
        assert isinstance(body, dict)
        if kind == "openai":
            assert body["error"]["type"] == "server_error" and "replica" in body["error"]["message"]
        else:
            assert isinstance(body["error"], str) and "replica" in body["error"]
    r = httpx.post(deployment.url + "/v1/embeddings", json={"model": "tiny-embed", "input": "after"}, timeout=30)
    assert r.status_code == 200


def test_requests_reach_the_replica_in_one_handle_call_and_rays_own_path_remains(deployment: Deployment) -> None:
    # ray_front: the proxy learns within seconds that onnxkit is the cluster's only application, and from
    # then on sends each request with a body of known length to a replica in one handle call.
    _wait_for_handle_path(deployment.url)
    x = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    want = np.maximum(np.array([[1, 2, 3, 4.0]]) @ W, 0)
    short = httpx.post(deployment.url + "/v2/models/mlp/infer", json=x, headers={"x-request-id": "req-7"}, timeout=30)
    assert short.status_code == 200 and short.headers["x-request-id"] == "req-7"  # as Ray's own path keeps it
    assert httpx.post(deployment.url + "/v2/models/mlp/infer", json=x, timeout=30).headers["x-request-id"]
    # a chunked body (no length to bound it) streams through Ray's own path, to the same answer
    chunked = httpx.post(deployment.url + "/v2/models/mlp/infer", content=iter([json.dumps(x).encode()]),
                         headers={"content-type": "application/json"}, timeout=30)
    assert chunked.status_code == 200 and "chunked" in chunked.request.headers.get("transfer-encoding", "")
    for r in (short, chunked):
        np.testing.assert_allclose(r.json()["outputs"][0]["data"], want.ravel(), rtol=1e-6)
    # a streamed answer (server-sent events) comes back piece by piece through the handle call
    client = openai.OpenAI(base_url=deployment.url + "/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "Hi"}],
                                            max_tokens=6, temperature=0, stream=True)
    chunks = list(stream)
    assert len(chunks) > 2 and chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_an_answer_larger_than_a_grpc_message_comes_back_on_both_paths(deployment: Deployment) -> None:
    x = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    short = httpx.post(deployment.url + "/v2/models/wide/infer", json=x, timeout=60)
    chunked = httpx.post(deployment.url + "/v2/models/wide/infer", content=iter([json.dumps(x).encode()]),
                         headers={"content-type": "application/json"}, timeout=60)  # Ray's own path
    for r in (short, chunked):
        assert r.status_code == 200, r.text[:300]
        assert len(r.content) > 4 << 20
        data = r.json()["outputs"][0]["data"]
        assert len(data) == 4 * WIDE and data[:8] == [1, 2, 3, 4, 1, 2, 3, 4]
