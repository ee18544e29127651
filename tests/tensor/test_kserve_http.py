"""KServe v2 REST through tritonclient.http and plain HTTP, against a real server on port 0."""

from __future__ import annotations

import json
import struct

import httpx
import numpy as np
import pytest
import tritonclient.http as th
from tensor_fixtures import LABELS, Served, mlp_reference
from tritonclient.utils import InferenceServerException

X = np.arange(12, dtype=np.float32).reshape(3, 4) / 7


@pytest.fixture(scope="module")
def client(served: Served) -> th.InferenceServerClient:
    return th.InferenceServerClient(served.http_address)


def test_health_and_server_metadata(client: th.InferenceServerClient, served: Served) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "onnxkit"
    assert "binary_tensor_data" in meta["extensions"]
    assert httpx.get(served.url + "/v2/health/live").status_code == 200


def test_model_metadata_and_readiness(client: th.InferenceServerClient, served: Served) -> None:
    meta = client.get_model_metadata("mlp")
    assert meta["versions"] == ["1", "2"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]}]
    assert client.get_model_metadata("mlp", "1")["name"] == "mlp"
    assert client.is_model_ready("mlp")
    assert client.is_model_ready("mlp", "2")
    assert not client.is_model_ready("broken")
    assert not client.is_model_ready("nope")
    config = client.get_model_config("mlp")
    assert config["max_batch_size"] == 8
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}]


@pytest.mark.parametrize("binary", [True, False])
def test_fp32_infer_matches_the_model(client: th.InferenceServerClient, binary: bool) -> None:
    inp = th.InferInput("x", list(X.shape), "FP32")
    inp.set_data_from_numpy(X, binary_data=binary)
    out = th.InferRequestedOutput("logits", binary_data=binary)
    result = client.infer("mlp", [inp], outputs=[out], request_id="req-7")
    # version 2 is the same MLP scaled by 2
    np.testing.assert_allclose(result.as_numpy("logits"), mlp_reference(X, 2.0), rtol=1e-5, atol=1e-5)
    response = result.get_response()
    assert response["id"] == "req-7"
    assert response["model_version"] == "2"  # the latest ready version serves un-versioned requests


def test_versions_are_served_separately(client: th.InferenceServerClient) -> None:
    inp = th.InferInput("x", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    v1 = client.infer("mlp", [inp], model_version="1").as_numpy("logits")
    v2 = client.infer("mlp", [inp], model_version="2").as_numpy("logits")
    np.testing.assert_allclose(v2, 2 * v1, rtol=1e-5)


def test_int64_infer_and_requested_outputs(client: th.InferenceServerClient) -> None:
    ids = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64)
    inp = th.InferInput("ids", [2, 3], "INT64")
    inp.set_data_from_numpy(ids)
    result = client.infer("ints", [inp], outputs=[th.InferRequestedOutput("total")])
    np.testing.assert_array_equal(result.as_numpy("total"), [6, 15])
    assert result.as_numpy("doubled") is None  # not requested, not sent


def test_bytes_infer_string_model(client: th.InferenceServerClient) -> None:
    text = np.array(["hello", "wörld", ""], dtype=object)
    inp = th.InferInput("text", [3], "BYTES")
    inp.set_data_from_numpy(text)
    result = client.infer("strings", [inp])
    assert result.as_numpy("upper").tolist() == [b"HELLO", "WöRLD".encode(), b""]
    assert result.as_numpy("same").tolist() == [b"hello", "wörld".encode(), b""]


def test_bytes_infer_json(client: th.InferenceServerClient) -> None:
    inp = th.InferInput("text", [2], "BYTES")
    inp.set_data_from_numpy(np.array([b"ab", b"cd"], dtype=object), binary_data=False)
    out = th.InferRequestedOutput("upper", binary_data=False)
    # JSON carries text; tritonclient hands it back as str
    assert client.infer("strings", [inp], outputs=[out]).as_numpy("upper").tolist() == ["AB", "CD"]


def test_fp16_through_the_binary_extension(client: th.InferenceServerClient) -> None:
    a = np.array([[0.5, 1.5], [-2.0, 65504 / 4]], dtype=np.float16)
    inp = th.InferInput("a", [2, 2], "FP16")
    inp.set_data_from_numpy(a)
    y = client.infer("half", [inp]).as_numpy("y")
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, a * 2)


def test_classification_extension(client: th.InferenceServerClient) -> None:
    inp = th.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(X[:1])
    out = th.InferRequestedOutput("logits", class_count=2)
    top = client.infer("mlp", [inp], outputs=[out], model_version="1").as_numpy("logits")
    scores = mlp_reference(X[:1])[0]
    best = np.argsort(-scores)[:2]
    assert top.shape == (1, 2)
    for entry, idx in zip(top[0], best, strict=True):
        value, index, label = entry.decode().split(":")
        assert int(index) == idx and label == LABELS[idx]
        assert float(value) == pytest.approx(scores[idx], abs=1e-5)


def test_json_data_flat_or_nested_and_id_echoed(served: Served) -> None:
    for data in ([[1, 2, 3, 4]], [1, 2, 3, 4]):
        body = {"id": "abc", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": data}]}
        r = httpx.post(served.url + "/v2/models/mlp/versions/1/infer", json=body)
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["id"] == "abc" and got["model_name"] == "mlp" and got["model_version"] == "1"
        (out,) = got["outputs"]
        assert out["shape"] == [1, 3] and out["datatype"] == "FP32"
        ref = mlp_reference(np.array([[1, 2, 3, 4]], dtype=np.float32)).ravel()
        np.testing.assert_allclose(out["data"], ref, rtol=1e-5)


def test_binary_request_by_hand(served: Served) -> None:
    """The extension's wire format: JSON header, then raw tensors; BYTES with 4-byte LE lengths."""
    words = [b"abc", b"xy"]
    raw = b"".join(struct.pack("<I", len(w)) + w for w in words)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "upper", "parameters": {"binary_data": True}}],
        }
    ).encode()
    r = httpx.post(
        served.url + "/v2/models/strings/infer",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    meta = json.loads(r.content[:n])
    size = meta["outputs"][0]["parameters"]["binary_data_size"]
    assert r.content[n:] == struct.pack("<I", 3) + b"ABC" + struct.pack("<I", 2) + b"XY"
    assert size == len(r.content) - n


def _error(served: Served, path: str, body: dict[str, object]) -> tuple[int, str]:
    r = httpx.post(served.url + path, json=body)
    return r.status_code, r.json()["error"]


def _x(
    name: str = "x", datatype: str = "FP32", shape: list[int] | None = None, data: object = None
) -> dict[str, object]:
    shape = shape or [1, 4]
    return {
        "name": name,
        "datatype": datatype,
        "shape": shape,
        "data": data if data is not None else [0.0] * 4,
    }


@pytest.mark.parametrize(
    ("inputs", "needles"),
    [
        ([_x(name="image")], ["'mlp'", "no input 'image'", "'x' (FP32 [-1, 4])"]),
        ([_x(datatype="INT64", data=[1, 2, 3, 4])], ["'x'", "'mlp'", "is FP32", "sent INT64"]),
        ([_x(shape=[1, 5], data=[0.0] * 5)], ["'x'", "'mlp'", "[-1, 4]", "sent [1, 5]"]),
        ([_x(shape=[1, 4], data=[0.0] * 3)], ["'x'", "[1, 4]", "4 elements", "holds 3"]),
        ([_x(shape=[9, 4], data=[0.0] * 36)], ["'x'", "9 rows", "max_batch_size is 8"]),
        ([], ["'mlp'", "no 'inputs'"]),
    ],
)
def test_bad_inputs_are_400_naming_what_was_expected(served: Served, inputs: list[object], needles: list[str]) -> None:
    status, message = _error(served, "/v2/models/mlp/versions/1/infer", {"inputs": inputs})
    assert status == 400
    for needle in needles:
        assert needle in message, message


def test_missing_input_is_400(served: Served) -> None:
    # ints has one input; send the wrong one only
    status, message = _error(served, "/v2/models/ints/infer", {"inputs": [_x()]})
    assert status == 400 and "no input 'x'" in message
    status, message = _error(served, "/v2/models/mlp/infer", {"inputs": [_x(), {**_x(), "name": "y"}]})
    assert status == 400 and "no input 'y'" in message


def test_unknown_model_version_and_broken_model(served: Served) -> None:
    status, message = _error(served, "/v2/models/nope/infer", {"inputs": [_x()]})
    assert status == 404 and "'nope'" in message
    status, message = _error(served, "/v2/models/mlp/versions/7/infer", {"inputs": [_x()]})
    assert status == 404 and "no version '7'" in message and "1, 2" in message
    status, message = _error(served, "/v2/models/broken/infer", {"inputs": [_x()]})
    assert status == 503 and "'broken'" in message and "cannot load" in message
    r = httpx.get(served.url + "/v2/models/broken/ready")
    assert r.status_code == 503
    assert httpx.get(served.url + "/v2/models/nope").status_code == 404


def test_requested_unknown_output_is_400(served: Served) -> None:
    body = {"inputs": [_x()], "outputs": [{"name": "probabilities"}]}
    status, message = _error(served, "/v2/models/mlp/infer", body)
    assert status == 400 and "no output 'probabilities'" in message and "'logits'" in message


def test_not_json_is_400(served: Served) -> None:
    r = httpx.post(served.url + "/v2/models/mlp/infer", content=b"{not json")
    assert r.status_code == 400 and "not JSON" in r.json()["error"]


def test_tritonclient_raises_with_the_server_message(client: th.InferenceServerClient) -> None:
    inp = th.InferInput("x", [1, 4], "FP64")
    inp.set_data_from_numpy(np.zeros((1, 4), dtype=np.float64))
    with pytest.raises(InferenceServerException, match="is FP32; the request sent FP64"):
        client.infer("mlp", [inp])


def test_repository_index_lists_every_model_with_state(client: th.InferenceServerClient) -> None:
    index = {(m["name"], m.get("version")): m for m in client.get_model_repository_index()}
    assert index[("mlp", "1")]["state"] == "READY"
    assert index[("mlp", "2")]["state"] == "READY"
    broken = index[("broken", "1")]
    assert broken["state"] == "UNAVAILABLE" and "cannot load" in broken["reason"]


def test_load_is_refused_without_explicit_model_control(client: th.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="--model-control explicit"):
        client.load_model("mlp")
