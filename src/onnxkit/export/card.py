"""The model card ``onnxkit.json`` written beside every exported graph: written and read here only.

The server reads it too (``models/folder``), so this module imports nothing heavy at import time.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxkit.types import JSON

if TYPE_CHECKING:
    import onnx

CARD = "onnxkit.json"


def versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in ("torch", "transformers", "onnx", "onnxruntime", "onnxruntime-extensions", "onnxkit"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _dim(d: onnx.TensorShapeProto.Dimension) -> int | str:
    if d.HasField("dim_value"):
        return int(d.dim_value)
    return d.dim_param or "?"


def graph_io(model_path: Path) -> tuple[list[JSON], list[JSON]]:
    """Inputs and outputs as {name, dtype, shape}, read without touching weights."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)

    def describe(values: Any) -> list[JSON]:
        out = []
        for v in values:
            t = v.type.tensor_type
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
            name = "string" if t.elem_type == onnx.TensorProto.STRING else str(dtype)
            out.append({"name": v.name, "dtype": name, "shape": [_dim(d) for d in t.shape.dim]})
        return out

    init = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]
    return describe(inputs), describe(model.graph.output)


def write_card(folder: Path, card: JSON) -> Path:
    path = folder / CARD
    path.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    return path


def read_card(folder: Path) -> JSON:
    """The folder's card, or {} when it has none."""
    path = folder / CARD
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}
