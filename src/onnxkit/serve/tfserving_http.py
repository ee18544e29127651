"""TF-Serving REST: ``:predict`` (row and columnar), model status and metadata; a codec around
``tasks.dataplane.DataPlane``.

JSON carries no datatypes here, so values are converted to each input's datatype from the model's
signature; binary strings travel as ``{"b64": "..."}``. ``GET /v1/models/{m}`` belongs to the
OpenAI routes, whose model object carries ``model_version_status`` too (``dataplane.model_version_status``).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response

from onnxkit.errors import InvalidRequest, OnnxkitError
from onnxkit.runtime.tensors import b64_text, check_shape, datatype_of
from onnxkit.serve.http import PARSE_INLINE_BYTES, app_state, describe_route, json_response, parse_json
from onnxkit.settings import Limits
from onnxkit.tasks.dataplane import InferRequest, RequestedOutput, model_version_status
from onnxkit.tasks.signature import Signature, dims
from onnxkit.types import JSON, Array

router = APIRouter(tags=["tfserving"])

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


PREDICT_KEYS = {"instances", "inputs", "signature_name", "output_filter"}


def _version(request: Request) -> str | None:
    v = request.path_params.get("version")
    return str(v) if v is not None else None


def _strings_of(value: Any, tensor: str) -> tuple[list[int], list[str]]:
    """A nested list of strings (or ``{"b64": ...}``) as (shape, row-major strings); ragged is a 400."""
    if not isinstance(value, list):
        if isinstance(value, str):
            return [], [value]
        if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
            return [], [b64_text(value["b64"], tensor)]
        raise InvalidRequest(
            f"input {tensor!r} is a string tensor; a value is {type(value).__name__} {str(value)[:40]!r}. "
            'Send strings or {"b64": "..."}'
        )
    parts = [_strings_of(v, tensor) for v in value]
    shapes = {tuple(shape) for shape, _ in parts}
    if len(shapes) > 1:
        raise InvalidRequest(f"input {tensor!r}: rows have different shapes {sorted(shapes)[:3]}; rows must be equal")
    inner = list(shapes.pop()) if shapes else []
    return [len(value), *inner], [x for _, flat in parts for x in flat]


def to_array(model: Signature, name: str, value: Any, limits: Limits) -> Array:
    spec = model.input(name)
    try:
        if spec.dtype == np.object_:
            shape, flat = _strings_of(value, name)
            array: Array = np.empty(len(flat), dtype=object)
            array[:] = flat
            array = array.reshape(shape)
        else:
            with np.errstate(over="raise", invalid="raise"):
                array = np.asarray(value, dtype=spec.dtype)
    except (ValueError, TypeError, OverflowError, FloatingPointError) as exc:
        raise InvalidRequest(
            f"input {name!r} of model {model.model!r}: values do not form a {datatype_of(spec.dtype)} tensor "
            f"(rows must have equal lengths): {exc}"
        ) from exc
    check_shape(list(array.shape), tensor=name, limits=limits)
    return array


def _row_inputs(model: Signature, instances: Any, limits: Limits) -> dict[str, Array]:
    if not isinstance(instances, list) or not instances:
        raise InvalidRequest(f"model {model.model!r}: 'instances' must be a non-empty list, one entry per row")
    names = [s.name for s in model.inputs]
    if all(isinstance(row, dict) and "b64" not in row for row in instances):
        inputs: dict[str, Array] = {}
        for name in {k for row in instances for k in row}:
            missing = sum(1 for row in instances if name not in row)
            if missing:
                raise InvalidRequest(f"model {model.model!r}: {missing} instances lack input {name!r}")
            inputs[name] = to_array(model, name, [row[name] for row in instances], limits)
        return inputs
    if len(names) != 1:
        raise InvalidRequest(
            f"model {model.model!r} has {len(names)} inputs ({', '.join(names)}); "
            "each instance must be an object keyed by input name"
        )
    return {names[0]: to_array(model, names[0], instances, limits)}


def _columnar_inputs(model: Signature, value: Any, limits: Limits) -> dict[str, Array]:
    names = [s.name for s in model.inputs]
    if isinstance(value, dict) and "b64" not in value:
        return {name: to_array(model, name, v, limits) for name, v in value.items()}
    if len(names) != 1:
        raise InvalidRequest(
            f"model {model.model!r} has {len(names)} inputs ({', '.join(names)}); 'inputs' must be an object"
        )
    return {names[0]: to_array(model, names[0], value, limits)}


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
    name, version = str(request.path_params["model"]), _version(request)
    plane = app_state(request).plane
    sig = plane.signature(name, version)
    raw = await request.body()
    body = await parse_json(raw)
    if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
        raise InvalidRequest(
            f"model {name!r}: the body needs exactly one of 'instances' (row format) or 'inputs' (columnar)"
        )
    unknown = sorted(set(body) - PREDICT_KEYS)
    if unknown:
        raise InvalidRequest(f"model {name!r}: unknown field(s) {unknown}; allowed: {sorted(PREDICT_KEYS)}")
    if body.get("signature_name", "serving_default") not in ("", "serving_default"):
        raise InvalidRequest(f"model {name!r} has one signature, 'serving_default'; got {body['signature_name']!r}")
    row = "instances" in body
    limits = app_state(request).settings.limits
    try:
        read = _row_inputs if row else _columnar_inputs
        value = body["instances" if row else "inputs"]
        if len(raw) > PARSE_INLINE_BYTES:  # converting grows with the data: off the event loop
            inputs = await asyncio.to_thread(read, sig, value, limits)
        else:
            inputs = read(sig, value, limits)
    except OnnxkitError as exc:
        if exc.message.startswith(("model ", "input ")):
            raise
        raise exc.within(f"model {name!r}") from exc
    wanted = body.get("output_filter", [])
    if not isinstance(wanted, list) or not all(isinstance(n, str) for n in wanted):
        raise InvalidRequest(f"model {name!r}: 'output_filter' must be a list of output names")
    outputs = [RequestedOutput(n) for n in wanted]
    result = (await plane.infer(InferRequest(name, inputs, version, outputs))).outputs
    if row:
        if len(result) == 1:
            (array,) = result.values()
            return json_response({"predictions": _plain(array)})
        n = min((a.shape[0] for a in result.values() if a.ndim), default=0)
        rows = [{k: _plain(a[i]) if a.ndim else _plain(a) for k, a in result.items()} for i in range(n)]
        return json_response({"predictions": rows})
    if len(result) == 1:
        (array,) = result.values()
        return json_response({"outputs": _plain(array)})
    return json_response({"outputs": {k: _plain(a) for k, a in result.items()}})


async def status(request: Request) -> Response:
    name = str(request.path_params["model"])
    return json_response(model_version_status(app_state(request).plane.version_status(name, _version(request))))


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
    name, version = str(request.path_params["model"]), _version(request)
    plane = app_state(request).plane
    sig = plane.signature(name, version)
    serving = {
        "inputs": _signature(sig.inputs),
        "outputs": _signature(sig.outputs),
        "method_name": "tensorflow/serving/predict",
    }
    served = plane.models.get(name, version).version
    return json_response(
        {
            "model_spec": {"name": name, "signature_name": "", "version": served},
            "metadata": {"signature_def": {"signature_def": {"serving_default": serving}}},
        }
    )


class PredictRequest(BaseModel):
    """TF-Serving ``POST /v1/models/{model}:predict``: rows (``instances``) or columns (``inputs``)."""

    model_config = ConfigDict(extra="forbid")
    signature_name: str | None = None
    instances: list[Any] | None = None
    inputs: Any = None
    output_filter: list[str] | None = None


describe_route("/v1/models/{model}:predict", "post", PredictRequest, "TF-Serving predict", ["model"])

for _prefix in ("/v1/models/{model}", "/v1/models/{model}/versions/{version}"):
    router.add_route(_prefix + ":predict", predict, methods=["POST"], include_in_schema=False)
    router.add_route(_prefix + "/metadata", metadata, methods=["GET"], include_in_schema=False)
router.add_route("/v1/models/{model}/versions/{version}", status, methods=["GET"], include_in_schema=False)
