"""Class 2: every size a request controls is bounded before work starts, and the bound is named."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg

from onnxkit.serve._proto import grpc_service_pb2 as pb
from onnxkit.serve._proto import grpc_service_pb2_grpc as pb_grpc

from .conftest import BODY_LIMIT, LIMITS, Probe, Served, error_of, rss_mb


def _post(url: str, path: str, body: object) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=60)


def _innocent_embed(url: str) -> Callable[[], httpx.Response]:
    return lambda: _post(url, "/v1/embeddings", {"model": "tiny-embed", "input": "an innocent text"})


@pytest.mark.parametrize(
    ("path", "body", "status", "bound"),
    [
        ("/v1/embeddings", {"model": "tiny-embed", "input": ["a"] * (LIMITS.max_inputs + 1)}, 413, "max_inputs"),
        ("/v1/embeddings", {"model": "tiny-embed", "input": ["paris is nice " * 30] * 60, "truncate": True}, 413,
         "max_request_tokens"),
        ("/v1/classify", {"model": "tiny-cls", "input": ["a"] * (LIMITS.max_inputs + 1)}, 413, "max_inputs"),
        ("/v1/classify", {"model": "tiny-nli", "input": ["the weather"] * 9, "candidate_labels": ["x"] * 8}, 413,
         "max_pairs"),
        ("/v1/qa", {"model": "tiny-qa", "question": ["who"] * 65, "context": ["paris"] * 65}, 413, "max_inputs"),
        ("/v1/completions", {"model": "tiny-chat", "prompt": ["a", "b", "c"], "n": 3, "max_tokens": 2}, 413,
         "max_generations"),
        ("/v1/chat/completions", {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}],
                                  "n": 9, "max_tokens": 2}, 413, "max_generations"),
        ("/v1/chat/completions", {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}],
                                  "stop": ["a", "b", "c", "d", "e"], "max_tokens": 2}, 400, "max_stop"),
        ("/v1/chat/completions", {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}],
                                  "stop": ["x" * 33], "max_tokens": 2}, 400, "max_stop_chars"),
    ],
)  # fmt: skip
def test_request_bounds(
    hard_server: Served, alongside: Callable[..., Probe], path: str, body: object, status: int, bound: str
) -> None:
    url = hard_server.url
    answers: list[httpx.Response] = []
    alongside(lambda: answers.append(_post(url, path, body)), _innocent_embed(url))
    assert answers[0].status_code == status, answers[0].text
    assert bound in error_of(answers[0])


def test_a_huge_input_list_is_refused_before_any_work(hard_server: Served, alongside: Callable[..., Probe]) -> None:
    """~200k inputs in a body under the limit: refused by the inputs bound, quickly, memory untouched."""
    url = hard_server.url
    body = json.dumps({"model": "tiny-embed", "input": ["a"] * 200_000}).encode()
    assert len(body) < BODY_LIMIT
    before = rss_mb(hard_server)
    answers: list[httpx.Response] = []
    alongside(lambda: answers.append(httpx.post(url + "/v1/embeddings", content=body, timeout=60,
                                                headers={"content-type": "application/json"})),
              _innocent_embed(url))  # fmt: skip
    assert answers[0].status_code == 413 and "max_inputs" in error_of(answers[0])
    assert answers[0].elapsed.total_seconds() < 5
    assert rss_mb(hard_server) - before < 100


@pytest.mark.parametrize(
    ("shape", "data", "needle"),
    [
        ([1000, 1000], [], "max_tensor_elements"),  # claims a million elements: refused before decoding
        ([0, 10**12], [], "max_tensor_elements"),  # a zero dim must not hide an absurd one
        ([1] * 9, [1.0], "max_dims"),
    ],
)
def test_tensor_shapes_are_bounded_before_allocation(
    hard_server: Served, alongside: Callable[..., Probe], shape: list[int], data: list[float], needle: str
) -> None:
    url = hard_server.url
    before = rss_mb(hard_server)
    answers: list[httpx.Response] = []
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": data}]}
    alongside(lambda: answers.append(_post(url, "/v2/models/pad/infer", body)),
              lambda: _post(url, "/v2/models/mlp/infer",
                            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}))
    assert answers[0].status_code in (400, 413), answers[0].text
    assert needle in error_of(answers[0])
    assert rss_mb(hard_server) - before < 100


def test_binary_bytes_claims_are_checked_against_the_bytes(hard_server: Served) -> None:
    """A BYTES input claiming 50k elements in 8 bytes: refused before splitting anything."""
    header = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [50_000],
                                      "parameters": {"binary_data_size": 8}}]}).encode()  # fmt: skip
    body = header + struct.pack("<I", 4) + b"abcd"
    r = httpx.post(hard_server.url + "/v2/models/words/infer", content=body, timeout=30,
                   headers={"Inference-Header-Content-Length": str(len(header))})  # fmt: skip
    assert r.status_code == 400 and "cannot hold them" in error_of(r)


def test_grpc_messages_over_the_body_limit_are_refused_quickly(hard_server: Served) -> None:
    """A gRPC request larger than --max-body-bytes is refused by gRPC itself, before it is decoded."""
    assert hard_server.grpc_port is not None
    before = rss_mb(hard_server)
    with grpc.insecure_channel(f"127.0.0.1:{hard_server.grpc_port}",
                               options=[("grpc.max_send_message_length", 64 * 2**20)]) as channel:  # fmt: skip
        stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        empties = struct.pack("<I", 0) * (3 * BODY_LIMIT // 4)  # 3 MB of empty BYTES elements
        request = pb.ModelInferRequest(model_name="words")
        request.inputs.add(name="text", datatype="BYTES", shape=[len(empties) // 4])
        request.raw_input_contents.append(empties)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert rss_mb(hard_server) - before < 100
    # and the server still answers gRPC
    client = tg.InferenceServerClient(f"127.0.0.1:{hard_server.grpc_port}")
    x = tg.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.ones((1, 4), np.float32))
    assert client.infer("mlp", [x]).as_numpy("y").shape == (1, 3)
    with grpc.insecure_channel(f"127.0.0.1:{hard_server.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        claim = pb.ModelInferRequest(model_name="pad")
        claim.inputs.add(name="x", datatype="FP32", shape=[1000, 1000])  # claims 4 MB, sends 16 bytes
        claim.raw_input_contents.append(np.zeros(4, np.float32).tobytes())
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(claim, timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_tensor_elements" in str(refused.value.details())
