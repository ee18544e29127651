"""Class 6: a malformed request is a 400 on every protocol (gRPC: INVALID_ARGUMENT), in that protocol's shape."""

from __future__ import annotations

import json
from collections.abc import Callable

import grpc
import httpx
import numpy as np
import pytest

from onnxkit.serve._proto import grpc_service_pb2 as pb
from onnxkit.serve._proto import grpc_service_pb2_grpc as pb_grpc

from .conftest import Probe, Served

X = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": [{**X, "datatype": ["FP32"]}]},
        {"inputs": [{**X, "datatype": "FP128"}]},
        {"inputs": [X], "outputs": [{"name": "y", "parameters": {"classification": "two"}}]},
        {"inputs": [X], "outputs": [{"name": "y", "parameters": {"classification": True}}]},
        {"inputs": [{**X, "shape": [1] * 65, "data": [1]}]},
        {"inputs": [{**X, "shape": [1, 2**70]}]},
        {"inputs": [{**X, "shape": [1, -4]}]},
        {"inputs": [{**X, "shape": [1, 4.5]}]},
        {"inputs": [{**X, "shape": "1,4"}]},
        {"inputs": [{**X, "data": [[1, 2], [3]]}]},
        {"inputs": [{**X, "data": ["a", "b", "c", "d"]}]},
        {"inputs": [{**X, "data": [1e39, 0, 0, 0]}]},
        {"inputs": [{**X, "parameters": "binary"}]},
        {"inputs": [{**X, "parameters": {"binary_data_size": "8"}}]},
        {"inputs": [X], "parameters": {"binary_data_output": "yes"}},
        {"inputs": [X], "outputs": {"name": "y"}},
        {"inputs": [X], "outputs": [{"name": 5}]},
        {"inputs": [X, X]},
        {"inputs": [X], "priority": 1},
        {"inputs": [{**X, "colour": "red"}]},
        {"inputs": [X], "parameters": {"sequence_id": 3}},
        {"inputs": "x"},
        {"inputs": []},
        [X],
    ],
)
def test_kserve_rest_malformed_is_400(
    hard_server: Served, alongside: Callable[..., Probe], body: object
) -> None:
    url = hard_server.url + "/v2/models/mlp/infer"
    answers: list[httpx.Response] = []
    alongside(lambda: answers.append(httpx.post(url, json=body, timeout=30)),
              lambda: httpx.post(url, json={"inputs": [X]}, timeout=30))  # fmt: skip
    r = answers[0]
    assert r.status_code in (400, 413), r.text
    assert isinstance(r.json()["error"], str)  # KServe's shape


@pytest.mark.parametrize(
    ("raw", "headers"),
    [
        (b"{not json", {}),
        (b'{"inputs": [' + b"[" * 2000 + b"]" * 2000 + b"]}", {}),  # pathological nesting
        (json.dumps({"inputs": [X]}).encode(), {"Inference-Header-Content-Length": "abc"}),
        (json.dumps({"inputs": [X]}).encode(), {"Inference-Header-Content-Length": "99999"}),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [NaN, 1, 2, 3]}]}', {}),
    ],
)
def test_kserve_rest_bad_bytes_are_400(hard_server: Served, raw: bytes, headers: dict[str, str]) -> None:
    r = httpx.post(hard_server.url + "/v2/models/mlp/infer", content=raw, headers=headers, timeout=30)
    assert r.status_code == 400, r.text
    assert isinstance(r.json()["error"], str)


def _grpc_infer(server: Served, request: pb.ModelInferRequest) -> grpc.RpcError:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=30)
    return caught.value


def test_grpc_malformed_is_invalid_argument(hard_server: Served) -> None:
    def request(**shape_kw: object) -> pb.ModelInferRequest:
        r = pb.ModelInferRequest(model_name="mlp")
        shape = shape_kw.get("shape", [1, 4])
        assert isinstance(shape, list)
        r.inputs.add(name="x", datatype=str(shape_kw.get("datatype", "FP32")), shape=shape)
        r.raw_input_contents.append(np.ones(4, np.float32).tobytes())
        return r

    bad = []
    r = request()
    out = r.outputs.add(name="y")
    out.parameters["classification"].string_param = "two"
    bad.append(r)
    bad.append(request(datatype="FP128"))
    bad.append(request(shape=[1, -4]))
    bad.append(request(shape=[2, 4]))  # 16 bytes for 32
    r = request()
    r.parameters["sequence_id"].int64_param = 3
    bad.append(r)
    for req in bad:
        err = _grpc_infer(hard_server, req)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())


@pytest.mark.parametrize(
    ("model", "body", "needle"),
    [
        ("mlp", {"instances": [[1, 2, 3, 4], [1, 2, 3]]}, "equal"),
        ("words", {"instances": [["a", "b"], ["c"]]}, "different shapes"),
        ("words", {"instances": [{"b64": "not base64!!"}]}, "base64"),
        ("words", {"instances": [5, 6]}, "string tensor"),
        ("mlp", {"instances": [[1, 2, 3, 4]], "colour": "red"}, "unknown"),
        ("mlp", {"instances": [[1, 2, 3, 4]], "signature_name": "other"}, "signature"),
        ("mlp", {"instances": [[1, 2, 3, 4]], "output_filter": "y"}, "output_filter"),
        ("mlp", {"instances": [[1, 2, 3, 4]], "inputs": [[1, 2, 3, 4]]}, "exactly one"),
    ],
)
def test_tfserving_malformed_is_400(hard_server: Served, model: str, body: object, needle: str) -> None:
    r = httpx.post(hard_server.url + f"/v1/models/{model}:predict", json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"], r.json()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": "hi"}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
        ("/v1/embeddings", {"input": {"text": "x"}}),
        ("/v1/embeddings", {"input": [1, "a"]}),
        ("/v1/classify", {"input": 5}),
        ("/v1/qa", {"question": ["a", "b"], "context": ["c"]}),
        ("/v1/qa", {"question": "a", "context": ["c"]}),
    ],
)
def test_openai_and_task_routes_malformed_is_400(hard_server: Served, path: str, body: object) -> None:
    r = httpx.post(hard_server.url + path, json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
