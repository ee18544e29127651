"""TF-Serving REST over plain HTTP: predict in row and columnar form, status, metadata, errors."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
from tensor_fixtures import Served, mlp_reference

ROWS = [[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0]]


def post(served: Served, path: str, body: object) -> httpx.Response:
    return httpx.post(served.url + path, json=body)


def test_predict_row_format(served: Served) -> None:
    r = post(served, "/v1/models/mlp/versions/1:predict", {"instances": ROWS})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], mlp_reference(np.array(ROWS, np.float32)), rtol=1e-5)


def test_predict_columnar_format_latest_version(served: Served) -> None:
    r = post(served, "/v1/models/mlp:predict", {"inputs": ROWS})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["outputs"], mlp_reference(np.array(ROWS, np.float32), 2.0), rtol=1e-5)
    named = post(served, "/v1/models/mlp:predict", {"inputs": {"x": ROWS}})
    assert named.json() == r.json()


def test_predict_multiple_outputs(served: Served) -> None:
    rows = post(served, "/v1/models/ints:predict", {"instances": [[1, 2], [3, 4]]}).json()
    assert rows == {"predictions": [{"doubled": [2, 4], "total": 3}, {"doubled": [6, 8], "total": 7}]}
    cols = post(served, "/v1/models/ints:predict", {"inputs": {"ids": [[1, 2], [3, 4]]}}).json()
    assert cols == {"outputs": {"doubled": [[2, 4], [6, 8]], "total": [3, 7]}}


def test_predict_strings_and_b64(served: Served) -> None:
    b64 = base64.b64encode(b"binary ok").decode()
    r = post(served, "/v1/models/strings:predict", {"instances": ["plain", {"b64": b64}]})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == [
        {"same": "plain", "upper": "PLAIN"},
        {"same": "binary ok", "upper": "BINARY OK"},
    ]
    named = post(served, "/v1/models/strings:predict", {"instances": [{"text": "x"}]})
    assert named.json()["predictions"] == [{"same": "x", "upper": "X"}]


def test_model_status(served: Served) -> None:
    r = httpx.get(served.url + "/v1/models/mlp/versions/2")
    assert r.json() == {
        "model_version_status": [
            {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    broken = httpx.get(served.url + "/v1/models/broken/versions/1").json()["model_version_status"][0]
    assert broken["state"] == "END" and "cannot load" in broken["status"]["error_message"]
    # the un-versioned GET is the OpenAI retrieve route, carrying TF-Serving's field too
    both = httpx.get(served.url + "/v1/models/mlp").json()
    assert both["id"] == "mlp" and [s["version"] for s in both["model_version_status"]] == ["2", "1"]
    missing = httpx.get(served.url + "/v1/models/mlp/versions/9")
    assert missing.status_code == 404 and "no version '9'" in missing.json()["error"]


def test_metadata(served: Served) -> None:
    r = httpx.get(served.url + "/v1/models/mlp/versions/1/metadata")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_spec"] == {"name": "mlp", "signature_name": "", "version": "1"}
    sig = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in sig["inputs"]["x"]["tensor_shape"]["dim"]] == ["-1", "4"]
    assert sig["outputs"]["logits"]["dtype"] == "DT_FLOAT"
    assert (
        httpx.get(served.url + "/v1/models/strings/metadata").json()["metadata"]["signature_def"]["signature_def"][
            "serving_default"
        ]["inputs"]["text"]["dtype"]
        == "DT_STRING"
    )


@pytest.mark.parametrize(
    ("path", "body", "status", "needles"),
    [
        ("/v1/models/mlp:predict", {"instances": [[1, 2, 3]]}, 400, ["'x'", "[-1, 4]", "[1, 3]"]),
        ("/v1/models/mlp:predict", {"instances": [[1, 2, 3, 4], [1]]}, 400, ["'x'", "equal lengths"]),
        ("/v1/models/mlp:predict", {"rows": ROWS}, 400, ["'instances'", "'inputs'"]),
        ("/v1/models/mlp:predict", {"inputs": {"y": ROWS}}, 400, ["no input 'y'"]),
        ("/v1/models/nope:predict", {"instances": ROWS}, 404, ["'nope'"]),
        ("/v1/models/broken:predict", {"instances": ROWS}, 503, ["'broken'"]),
    ],
)
def test_errors_are_plain_and_name_the_problem(
    served: Served, path: str, body: object, status: int, needles: list[str]
) -> None:
    r = post(served, path, body)
    assert r.status_code == status
    message = r.json()["error"]
    assert isinstance(message, str)
    for needle in needles:
        assert needle in message, message
