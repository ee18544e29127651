"""TF-Serving REST: ``:predict`` (row and columnar), model status and metadata.

JSON carries no datatypes here, so values are converted to each input's
datatype from the probed graph; binary strings travel as ``{"b64": "..."}``.
``GET /v1/models/{m}`` belongs to the OpenAI routes, which call
``tfserving_status`` to add ``model_version_status`` to their answer.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from onnxkit.errors import InvalidRequest, ModelNotFound, OnnxkitError
from onnxkit.runtime.store import Model, State
from onnxkit.runtime.tensors import datatype_of
from onnxkit.serve.state import AppState
from onnxkit.tasks.tensor import TensorModel, dims, resolve
from onnxkit.types import JSON, Array

router = APIRouter(tags=["tfserving"])

TF_STATES = {
    State.LOADING: "LOADING",
    State.READY: "AVAILABLE",
    State.UNLOADING: "UNLOADING",
    State.UNAVAILABLE: "END",
}
TF_DTYPES = {
    "BOOL": "DT_BOOL",
    "UINT8": "DT_UINT8",
    "UINT16": "DT_UINT16",
    "UINT32": "DT_UINT32",
    "UINT64": "DT_UINT64",
    "INT8": "DT_INT8",
    "INT16": "DT_INT16",
    "INT32": "DT_INT32",
    "INT64": "DT_INT64",
    "FP16": "DT_HALF",
    "FP32": "DT_FLOAT",
    "FP64": "DT_DOUBLE",
    "BYTES": "DT_STRING",
}


def tfserving_status(model: Model, version: str | None) -> JSON:
    """``{"model_version_status": [...]}`` for one version or all of them (TF-Serving's GetModelStatus)."""
    if version is not None and version not in model.versions:
        have = ", ".join(sorted(model.versions)) or "none"
        raise ModelNotFound(f"model {model.name!r} has no version {version!r}; versions: {have}")
    picked = [model.versions[version]] if version is not None else list(model.versions.values())
    picked.sort(key=lambda v: int(v.version) if v.version.isdigit() else -1, reverse=True)
    return {
        "model_version_status": [
            {
                "version": v.version,
                "state": TF_STATES.get(v.state, "END"),
                "status": {
                    "error_code": "OK" if v.state is not State.UNAVAILABLE else "UNKNOWN",
                    "error_message": v.reason if v.state is State.UNAVAILABLE else "",
                },
            }
            for v in picked
        ]
    }


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json"
    )


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.onnxkit
    return state


def _version(request: Request) -> str | None:
    v = request.path_params.get("version")
    return str(v) if v is not None else None


def _text(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise InvalidRequest(f'a string value is an object {value!r}; binary values are {{"b64": "..."}}')
        return base64.b64decode(value["b64"]).decode("utf-8", errors="surrogateescape")
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value


def to_array(model: TensorModel, name: str, value: Any) -> Array:
    spec = model.input_spec(name)
    try:
        if spec.dtype == np.object_:
            array: Array = np.array(_text(value), dtype=object)
            if any(not isinstance(v, str) for v in array.flat):
                array = np.array([str(v) for v in array.flat], dtype=object).reshape(array.shape)
            return array
        return np.asarray(value, dtype=spec.dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidRequest(
            f"input {name!r} of model {model.name!r}: values do not form a {datatype_of(spec.dtype)} tensor "
            f"(rows must have equal lengths): {exc}"
        ) from exc


def _row_inputs(model: TensorModel, instances: Any) -> dict[str, Array]:
    if not isinstance(instances, list) or not instances:
        raise InvalidRequest(f"model {model.name!r}: 'instances' must be a non-empty list, one entry per row")
    names = [s.name for s in model.inputs]
    if all(isinstance(row, dict) and "b64" not in row for row in instances):
        inputs: dict[str, Array] = {}
        for name in {k for row in instances for k in row}:
            missing = sum(1 for row in instances if name not in row)
            if missing:
                raise InvalidRequest(f"model {model.name!r}: {missing} instances lack input {name!r}")
            inputs[name] = to_array(model, name, [row[name] for row in instances])
        return inputs
    if len(names) != 1:
        raise InvalidRequest(
            f"model {model.name!r} has {len(names)} inputs ({', '.join(names)}); "
            "each instance must be an object keyed by input name"
        )
    return {names[0]: to_array(model, names[0], instances)}


def _columnar_inputs(model: TensorModel, value: Any) -> dict[str, Array]:
    names = [s.name for s in model.inputs]
    if isinstance(value, dict) and "b64" not in value:
        return {name: to_array(model, name, v) for name, v in value.items()}
    if len(names) != 1:
        raise InvalidRequest(
            f"model {model.name!r} has {len(names)} inputs ({', '.join(names)}); 'inputs' must be an object"
        )
    return {names[0]: to_array(model, names[0], value)}


def _plain(array: Any) -> Any:
    if not isinstance(array, np.ndarray):  # one element of a row
        return _strings(array) if isinstance(array, str | bytes) else getattr(array, "item", lambda: array)()
    if array.ndim == 0 or array.dtype == np.object_:
        return _strings(array.tolist())
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return array


def _strings(value: Any) -> Any:
    if isinstance(value, list):
        return [_strings(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode()}
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # bytes that came in as b64 and are not text go back as b64
            return {"b64": base64.b64encode(value.encode("utf-8", errors="surrogateescape")).decode()}
    return value


async def predict(request: Request) -> Response:
    name = str(request.path_params["model"])
    model = resolve(_state(request).store, name, _version(request))
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not JSON: {exc}") from exc
    if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
        raise InvalidRequest(
            f"model {name!r}: the body needs exactly one of 'instances' (row format) or 'inputs' (columnar)"
        )
    row = "instances" in body
    try:
        inputs = _row_inputs(model, body["instances"]) if row else _columnar_inputs(model, body["inputs"])
    except OnnxkitError as exc:
        if not exc.message.startswith(("model ", "input ")):
            exc.message = f"model {name!r}: {exc.message}"
        raise
    wanted = body.get("output_filter")
    result = await model.infer(inputs, wanted if isinstance(wanted, list) and wanted else None)
    if row:
        if len(result) == 1:
            (array,) = result.values()
            return _json({"predictions": _plain(array)})
        n = min((a.shape[0] for a in result.values() if a.ndim), default=0)
        rows = [{k: _plain(a[i]) if a.ndim else _plain(a) for k, a in result.items()} for i in range(n)]
        return _json({"predictions": rows})
    if len(result) == 1:
        (array,) = result.values()
        return _json({"outputs": _plain(array)})
    return _json({"outputs": {k: _plain(a) for k, a in result.items()}})


async def status(request: Request) -> Response:
    name = str(request.path_params["model"])
    try:
        return _json(tfserving_status(_state(request).store.model(name), _version(request)))
    except OnnxkitError as exc:  # this path is TF-Serving's, so its error shape, not OpenAI's
        return _json({"error": exc.message}, int(exc.status))


def _signature(specs: Any) -> JSON:
    out: JSON = {}
    for s in specs:
        out[s.name] = {
            "dtype": TF_DTYPES[datatype_of(s.dtype)],
            "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims(s)], "unknown_rank": False},
            "name": s.name,
        }
    return out


async def metadata(request: Request) -> Response:
    name = str(request.path_params["model"])
    model = resolve(_state(request).store, name, _version(request))
    serving = {
        "inputs": _signature(model.inputs),
        "outputs": _signature(model.outputs),
        "method_name": "tensorflow/serving/predict",
    }
    return _json(
        {
            "model_spec": {"name": name, "signature_name": "", "version": model.version},
            "metadata": {"signature_def": {"signature_def": {"serving_default": serving}}},
        }
    )


for _prefix in ("/v1/models/{model}", "/v1/models/{model}/versions/{version}"):
    router.add_route(_prefix + ":predict", predict, methods=["POST"], include_in_schema=False)
    router.add_route(_prefix + "/metadata", metadata, methods=["GET"], include_in_schema=False)
router.add_route("/v1/models/{model}/versions/{version}", status, methods=["GET"], include_in_schema=False)
