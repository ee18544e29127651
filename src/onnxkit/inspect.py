"""``onnxkit inspect``: what an ONNX file holds, read without loading its weights.

onnx.load(load_external_data=False) still reads every in-file initializer's raw_data, so the
top-level messages are walked with a small protobuf wire reader over an mmap instead: tensor
headers (name, dtype, dims, external-data refs) are decoded and their payloads skipped unread.
"""

from __future__ import annotations

import json
import math
import mmap
from collections import Counter
from pathlib import Path
from typing import Any

import onnx

from onnxkit.errors import InvalidRequest
from onnxkit.types import JSON

SCHEMA = "onnxkit.inspect/1"
# ModelProto / GraphProto / TensorProto field numbers (onnx.proto3)
_M_IR, _M_PRODUCER, _M_PRODUCER_VERSION, _M_DOMAIN, _M_VERSION, _M_DOC = 1, 2, 3, 4, 5, 6
_M_GRAPH, _M_OPSET, _M_META, _M_FUNCTIONS = 7, 8, 14, 25
_G_NODE, _G_INIT, _G_INPUT, _G_OUTPUT, _G_SPARSE = 1, 5, 11, 12, 15
_T_DIMS, _T_TYPE, _T_NAME, _T_EXTERNAL, _T_LOCATION = 1, 2, 8, 13, 14
_SUB_BITS: dict[int, int] = {int(onnx.TensorProto.INT4): 4, int(onnx.TensorProto.UINT4): 4}


def _varint(buf: Any, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: Any, start: int, end: int) -> Any:
    """Yield (field number, wire type, value or (start, end) of a length-delimited payload)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 2:
            length, pos = _varint(buf, pos)
            yield number, wire, (pos, pos + length)
            pos += length
        elif wire == 1:
            yield number, wire, None
            pos += 8
        elif wire == 5:
            yield number, wire, None
            pos += 4
        else:
            raise InvalidRequest(f"not an ONNX protobuf: wire type {wire} at byte {pos}")


def _tensor_header(buf: Any, start: int, end: int) -> JSON:
    header: JSON = {"dims": [], "dtype": 0, "name": "", "external": {}}
    for number, wire, value in _fields(buf, start, end):
        if number == _T_DIMS and wire == 0:
            header["dims"].append(value)
        elif number == _T_DIMS and wire == 2:  # packed
            pos, stop = value
            while pos < stop:
                dim, pos = _varint(buf, pos)
                header["dims"].append(dim)
        elif number == _T_TYPE:
            header["dtype"] = value
        elif number == _T_NAME:
            header["name"] = bytes(buf[value[0] : value[1]]).decode()
        elif number == _T_EXTERNAL:
            entry = onnx.StringStringEntryProto.FromString(bytes(buf[value[0] : value[1]]))
            header["external"][entry.key] = entry.value
    return header


def _dtype_name(elem: int) -> str:
    if elem == onnx.TensorProto.STRING:
        return "string"
    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem))
    except (KeyError, ValueError, TypeError):
        try:
            return onnx.helper.tensor_dtype_to_string(elem).removeprefix("TensorProto.").lower()
        except (KeyError, ValueError):
            return f"type{elem}"


def _nbytes(elem: int, count: int) -> int:
    if elem in _SUB_BITS:
        return (count * _SUB_BITS[elem] + 7) // 8
    try:
        return count * onnx.helper.tensor_dtype_to_np_dtype(elem).itemsize
    except (KeyError, ValueError, TypeError):
        return 0


def _value_info(raw: bytes) -> JSON:
    info = onnx.ValueInfoProto.FromString(raw)
    tensor = info.type.tensor_type
    shape: list[int | str] = [
        int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim
    ]
    return {"name": info.name, "dtype": _dtype_name(tensor.elem_type), "shape": shape}


def _count_ops(node: onnx.NodeProto, ops: Counter[str]) -> None:
    ops[f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type] += 1
    for attr in node.attribute:
        for graph in [attr.g] if attr.HasField("g") else list(attr.graphs):
            for inner in graph.node:
                _count_ops(inner, ops)


def _model_file(path: Path) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        for name in ("model.onnx", "model_quantized.onnx"):
            if (path / name).is_file():
                return path / name
        found = sorted(path.glob("*.onnx"))
        if len(found) == 1:
            return found[0]
        raise InvalidRequest(f"folder {path} holds {len(found)} .onnx files and no model.onnx; pass one FILE")
    raise InvalidRequest(f"{path} does not exist; expected an .onnx file or a model folder")


def _card(folder: Path) -> JSON | None:
    for name in ("onnxkit.json", "genai_config.json"):
        if (folder / name).is_file():
            data: JSON = json.loads((folder / name).read_text())
            return {"file": name, **data}
    return None


def read_graph(path: Path) -> onnx.GraphProto:
    """The graph's structure (nodes, inputs, outputs, initializer names and shapes) without weights.

    For drawings: ``onnx.load(load_external_data=False)`` would read every in-file weight.
    """
    model_path = _model_file(path)
    graph = onnx.GraphProto()
    with model_path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        span = next((value for number, _, value in _fields(buf, 0, len(buf)) if number == _M_GRAPH), None)
        if span is None:
            raise InvalidRequest(f"{model_path} has no graph; is it an ONNX model?")
        for number, _, value in _fields(buf, *span):
            raw = bytes(buf[value[0] : value[1]]) if number in (_G_NODE, _G_INPUT, _G_OUTPUT) else b""
            if number == _G_NODE:
                graph.node.append(onnx.NodeProto.FromString(raw))
            elif number == _G_INPUT:
                graph.input.append(onnx.ValueInfoProto.FromString(raw))
            elif number == _G_OUTPUT:
                graph.output.append(onnx.ValueInfoProto.FromString(raw))
            elif number in (_G_INIT, _G_SPARSE):
                head = _tensor_header(buf, *value)  # the header only; the payload stays unread
                graph.initializer.append(
                    onnx.TensorProto(name=head["name"], dims=head["dims"], data_type=head["dtype"])
                )
    return graph


def inspect_model(path: Path) -> JSON:
    """The report behind ``onnxkit inspect --json`` (schema onnxkit.inspect/1, see docs/inspect.md)."""
    model_path = _model_file(path)
    report: JSON = {
        "schema": SCHEMA,
        "path": str(model_path),
        "file_bytes": model_path.stat().st_size,
        "ir_version": 0,
        "producer": {"name": "", "version": ""},
        "domain": "",
        "model_version": 0,
        "doc_string": "",
        "opset_imports": [],
        "metadata": {},
        "inputs": [],
        "outputs": [],
        "functions": 0,
    }
    ops: Counter[str] = Counter()
    by_dtype: dict[str, JSON] = {}
    external: dict[str, JSON] = {}
    initializers = 0
    with model_path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        graph_span = None

        def text(span: tuple[int, int]) -> str:
            return bytes(buf[span[0] : span[1]]).decode(errors="replace")

        for number, _, value in _fields(buf, 0, len(buf)):
            if number == _M_IR:
                report["ir_version"] = value
            elif number == _M_PRODUCER:
                report["producer"]["name"] = text(value)
            elif number == _M_PRODUCER_VERSION:
                report["producer"]["version"] = text(value)
            elif number == _M_DOMAIN:
                report["domain"] = text(value)
            elif number == _M_VERSION:
                report["model_version"] = value
            elif number == _M_DOC:
                report["doc_string"] = text(value)
            elif number == _M_GRAPH:
                graph_span = value
            elif number == _M_OPSET:
                op = onnx.OperatorSetIdProto.FromString(bytes(buf[value[0] : value[1]]))
                report["opset_imports"].append({"domain": op.domain or "ai.onnx", "version": op.version})
            elif number == _M_META:
                entry = onnx.StringStringEntryProto.FromString(bytes(buf[value[0] : value[1]]))
                report["metadata"][entry.key] = entry.value
            elif number == _M_FUNCTIONS:
                report["functions"] += 1
        if graph_span is None:
            raise InvalidRequest(f"{model_path} has no graph; is it an ONNX model?")
        init_names: set[str] = set()
        inputs: list[JSON] = []
        for number, _, value in _fields(buf, *graph_span):
            if number == _G_NODE:
                _count_ops(onnx.NodeProto.FromString(bytes(buf[value[0] : value[1]])), ops)
            elif number in (_G_INIT, _G_SPARSE):
                head = _tensor_header(buf, *value)
                initializers += 1
                init_names.add(head["name"])
                count = math.prod(head["dims"])
                dtype = _dtype_name(head["dtype"])
                size = _nbytes(head["dtype"], count)
                slot = by_dtype.setdefault(dtype, {"count": 0, "bytes": 0, "tensors": 0})
                slot["count"] += count
                slot["bytes"] += size
                slot["tensors"] += 1
                if "location" in head["external"]:
                    ext = external.setdefault(head["external"]["location"], {"tensors": 0, "bytes": 0})
                    ext["tensors"] += 1
                    ext["bytes"] += int(head["external"].get("length", size))
            elif number == _G_INPUT:
                inputs.append(_value_info(bytes(buf[value[0] : value[1]])))
            elif number == _G_OUTPUT:
                report["outputs"].append(_value_info(bytes(buf[value[0] : value[1]])))
    report["inputs"] = [i for i in inputs if i["name"] not in init_names]
    report["parameters"] = {
        "count": sum(v["count"] for v in by_dtype.values()),
        "bytes": sum(v["bytes"] for v in by_dtype.values()),
        "initializers": initializers,
        "by_dtype": dict(sorted(by_dtype.items())),
    }
    report["external_data"] = []
    for name, v in sorted(external.items()):
        data_file = model_path.parent / name
        exists = data_file.is_file()
        report["external_data"].append(
            {
                "file": name,
                "tensors": v["tensors"],
                "bytes": v["bytes"],
                "exists": exists,
                "file_bytes": data_file.stat().st_size if exists else 0,
            }
        )
    report["ops"] = {"total": sum(ops.values()), "histogram": dict(ops.most_common())}
    report["card"] = _card(model_path.parent)
    return report


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def format_report(report: JSON) -> str:
    def io(items: list[JSON]) -> list[str]:
        return [f"    {i['name']}: {i['dtype']} [{', '.join(map(str, i['shape']))}]" for i in items]

    params = report["parameters"]
    lines = [
        f"{report['path']} ({_human(report['file_bytes'])})",
        f"  IR version {report['ir_version']}, producer {report['producer']['name']} "
        f"{report['producer']['version']}".rstrip(),
        "  opsets: " + ", ".join(f"{o['domain']} {o['version']}" for o in report["opset_imports"]),
    ]
    if report["metadata"]:
        lines.append("  metadata: " + ", ".join(f"{k}={v}" for k, v in report["metadata"].items()))
    lines += ["  inputs:", *io(report["inputs"]), "  outputs:", *io(report["outputs"])]
    lines.append(f"  parameters: {params['count']:,} in {params['initializers']} tensors, "
                 f"{_human(params['bytes'])}")
    for dtype, v in params["by_dtype"].items():
        lines.append(f"    {dtype}: {v['count']:,} ({_human(v['bytes'])}, {v['tensors']} tensors)")
    for ext in report["external_data"]:
        state = "" if ext["exists"] else " MISSING"
        size = _human(ext["bytes"])
        lines.append(f"  external data: {ext['file']} ({ext['tensors']} tensors, {size}){state}")
    lines.append(f"  ops ({report['ops']['total']}):")
    lines += [f"    {op}: {n}" for op, n in report["ops"]["histogram"].items()]
    if report["card"] is not None:
        card = {k: v for k, v in report["card"].items() if k not in ("inputs", "outputs", "versions")}
        lines.append(f"  card ({card.pop('file')}): {json.dumps(card, sort_keys=True)}")
    return "\n".join(lines)
