"""KServe v2 gRPC through tritonclient.grpc, against a real server (HTTP port 0, gRPC on a free port)."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
from tensor_fixtures import LABELS, Served, mlp_reference
from tritonclient.utils import InferenceServerException

from onnxkit.serve._proto import grpc_service_pb2 as pb
from onnxkit.serve._proto import grpc_service_pb2_grpc as pb_grpc
from onnxkit.serve.server import Server

X = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)


@pytest.fixture(scope="module")
def client(served: Served) -> tg.InferenceServerClient:
    return tg.InferenceServerClient(served.grpc_address)


def test_health_and_metadata(client: tg.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.get_server_metadata().name == "onnxkit"
    assert client.is_model_ready("mlp")
    assert client.is_model_ready("mlp", "1")
    assert not client.is_model_ready("broken")
    assert not client.is_model_ready("nope")
    meta = client.get_model_metadata("mlp", as_json=True)
    assert meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert meta["outputs"][0]["name"] == "logits"


def test_fp32_infer(client: tg.InferenceServerClient) -> None:
    inp = tg.InferInput("x", [2, 4], "FP32")
    inp.set_data_from_numpy(X)
    result = client.infer("mlp", [inp], model_version="1", request_id="r1")
    np.testing.assert_allclose(result.as_numpy("logits"), mlp_reference(X), rtol=1e-5, atol=1e-5)
    response = result.get_response()
    assert response.id == "r1" and response.model_version == "1"


def test_int64_infer_requested_output(client: tg.InferenceServerClient) -> None:
    ids = np.array([[3, 4], [5, 6]], dtype=np.int64)
    inp = tg.InferInput("ids", [2, 2], "INT64")
    inp.set_data_from_numpy(ids)
    result = client.infer("ints", [inp], outputs=[tg.InferRequestedOutput("doubled")])
    np.testing.assert_array_equal(result.as_numpy("doubled"), ids * 2)
    assert result.as_numpy("total") is None


def test_bytes_infer(client: tg.InferenceServerClient) -> None:
    inp = tg.InferInput("text", [2], "BYTES")
    inp.set_data_from_numpy(np.array(["grpc", "ünï"], dtype=object))
    result = client.infer("strings", [inp])
    assert result.as_numpy("same").tolist() == [b"grpc", "ünï".encode()]
    assert result.as_numpy("upper").tolist() == [b"GRPC", "üNï".encode()]  # the "C" locale: ASCII only


def test_fp16_infer(client: tg.InferenceServerClient) -> None:
    a = np.array([[1.25, -3.0]], dtype=np.float16)
    inp = tg.InferInput("a", [1, 2], "FP16")
    inp.set_data_from_numpy(a)
    y = client.infer("half", [inp]).as_numpy("y")
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, a * 2)


def test_classification(client: tg.InferenceServerClient) -> None:
    inp = tg.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(X[:1])
    out = tg.InferRequestedOutput("logits", class_count=1)
    (top,) = client.infer("mlp", [inp], outputs=[out], model_version="1").as_numpy("logits")[0]
    best = int(np.argmax(mlp_reference(X[:1])[0]))
    assert top.decode().split(":")[1:] == [str(best), LABELS[best]]


def test_typed_contents_without_raw(served: Served) -> None:
    """tritonclient always sends raw contents; the spec's typed contents work too."""
    with grpc.insecure_channel(served.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        request = pb.ModelInferRequest(model_name="ints")
        tensor = request.inputs.add(name="ids", datatype="INT64", shape=[1, 3])
        tensor.contents.int64_contents.extend([1, 2, 3])
        response = stub.ModelInfer(request)
    names = [o.name for o in response.outputs]
    raw = dict(zip(names, response.raw_output_contents, strict=True))
    assert np.frombuffer(raw["total"], dtype="<i8").tolist() == [6]
    assert np.frombuffer(raw["doubled"], dtype="<i8").tolist() == [2, 4, 6]


def test_errors_map_to_status_codes(client: tg.InferenceServerClient) -> None:
    inp = tg.InferInput("x", [1, 4], "INT32")
    inp.set_data_from_numpy(np.zeros((1, 4), dtype=np.int32))
    with pytest.raises(InferenceServerException) as bad:
        client.infer("mlp", [inp])
    assert bad.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input 'x' of model 'mlp' is FP32; the request sent INT32" in bad.value.message()
    with pytest.raises(InferenceServerException) as missing:
        client.infer("nope", [inp])
    assert missing.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as broken:
        client.infer("broken", [inp])
    assert broken.value.status() == "StatusCode.UNAVAILABLE"
    assert "cannot load" in broken.value.message()


def test_repository_index(client: tg.InferenceServerClient) -> None:
    index = client.get_model_repository_index(as_json=True)["models"]
    states = {(m["name"], m.get("version")): m["state"] for m in index}
    assert states[("mlp", "2")] == "READY"
    assert states[("broken", "1")] == "UNAVAILABLE"


def test_api_key_guards_grpc_and_http(shared_repository: Path) -> None:
    with Server([], port=0, repositories=(str(shared_repository),), grpc_port=0, api_key="s3cret") as s:
        client = tg.InferenceServerClient(f"127.0.0.1:{s.grpc_port}")
        with pytest.raises(InferenceServerException) as denied:
            client.get_model_metadata("mlp")
        assert denied.value.status() == "StatusCode.UNAUTHENTICATED"
        assert client.get_model_metadata("mlp", headers={"authorization": "Bearer s3cret"}).name == "mlp"
        assert httpx.get(s.url + "/v2/models/mlp").status_code == 401
        assert httpx.get(s.url + "/v2/models/mlp", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(s.url + "/v2/health/live").status_code == 200  # probes stay open
