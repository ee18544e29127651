"""onnxkit inspect: IO, opsets, parameters by dtype, external data, op histogram, card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxkit.cli import main
from onnxkit.errors import InvalidRequest
from onnxkit.export import export
from onnxkit.inspect import SCHEMA, format_report, inspect_model

KEYS = {
    "schema",
    "path",
    "file_bytes",
    "ir_version",
    "producer",
    "domain",
    "model_version",
    "doc_string",
    "opset_imports",
    "metadata",
    "inputs",
    "outputs",
    "functions",
    "parameters",
    "external_data",
    "ops",
    "card",
}


@pytest.fixture(scope="module")
def exported(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(tiny_bert_dir, "pooling", tmp_path_factory.mktemp("inspect") / "out")


def _expected_params(model: onnx.ModelProto) -> tuple[int, int]:
    arrays = [numpy_helper.to_array(t) for t in model.graph.initializer]
    return sum(a.size for a in arrays), sum(a.nbytes for a in arrays)


def test_in_file_weights(exported: Path) -> None:
    report = inspect_model(exported)
    assert set(report) == KEYS and report["schema"] == SCHEMA
    model = onnx.load(str(exported / "model.onnx"))
    count, nbytes = _expected_params(model)
    assert report["parameters"]["count"] == count and report["parameters"]["bytes"] == nbytes
    assert report["parameters"]["by_dtype"]["float32"]["count"] > 0
    assert report["ir_version"] == model.ir_version
    assert {"domain": "ai.onnx", "version": 17} in report["opset_imports"]
    assert report["inputs"][0] == {"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]}
    assert report["outputs"] == [{"name": "embeddings", "dtype": "float32", "shape": ["batch", 32]}]
    assert report["ops"]["total"] == len(model.graph.node)
    assert report["ops"]["histogram"]["MatMul"] > 0
    assert report["metadata"]["exported_by"] == "onnxkit"
    assert report["card"]["task"] == "pooling" and report["external_data"] == []
    assert "MatMul" in format_report(report)


def test_external_data_is_reported_not_loaded(exported: Path, tmp_path: Path) -> None:
    model = onnx.load(str(exported / "model.onnx"))
    count, nbytes = _expected_params(model)
    tensors = len(model.graph.initializer)
    onnx.save_model(
        model,
        str(tmp_path / "big.onnx"),
        save_as_external_data=True,
        location="big.weights",
        size_threshold=0,
    )
    report = inspect_model(tmp_path / "big.onnx")
    assert report["file_bytes"] < 64 * 1024  # the graph alone
    assert report["parameters"]["count"] == count
    [ext] = report["external_data"]
    assert ext["file"] == "big.weights" and ext["exists"] and ext["tensors"] == tensors
    assert ext["bytes"] == nbytes and ext["file_bytes"] >= nbytes
    # the weights are never read: the report is the same with the data file gone
    (tmp_path / "big.weights").unlink()
    again = inspect_model(tmp_path / "big.onnx")
    assert again["parameters"] == report["parameters"] and again["external_data"][0]["exists"] is False


def test_custom_domains_and_subgraphs(tmp_path: Path) -> None:
    body = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["c"], ["c_out"]), onnx.helper.make_node("Relu", ["x"], ["y"])],
        "body",
        [
            onnx.helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
            onnx.helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, []),
        ],
        [
            onnx.helper.make_tensor_value_info("c_out", onnx.TensorProto.BOOL, []),
            onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2]),
        ],
    )
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node("Loop", ["n", ""], ["ys"], body=body),
            onnx.helper.make_node("Gelu", ["x"], ["g"], domain="com.microsoft"),
        ],
        "g",
        [
            onnx.helper.make_tensor_value_info("n", onnx.TensorProto.INT64, []),
            onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2]),
        ],
        [
            onnx.helper.make_tensor_value_info("ys", onnx.TensorProto.FLOAT, ["N", 2]),
            onnx.helper.make_tensor_value_info("g", onnx.TensorProto.FLOAT, [2]),
        ],
        [numpy_helper.from_array(np.zeros(3, dtype=np.float16), "unused")],
    )
    model = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("com.microsoft", 1)]
    )
    onnx.helper.set_model_props(model, {"author": "test"})
    onnx.save(model, str(tmp_path / "m.onnx"))
    report = inspect_model(tmp_path / "m.onnx")
    assert report["ops"]["histogram"] == {"Loop": 1, "com.microsoft::Gelu": 1, "Identity": 1, "Relu": 1}
    assert {"domain": "com.microsoft", "version": 1} in report["opset_imports"]
    assert report["parameters"]["by_dtype"] == {"float16": {"count": 3, "bytes": 6, "tensors": 1}}
    assert report["metadata"] == {"author": "test"} and report["card"] is None


def test_cli_json(exported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(exported / "model.onnx"), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == KEYS
    assert main(["inspect", str(exported)]) == 0
    assert "parameters:" in capsys.readouterr().out


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="does not exist"):
        inspect_model(tmp_path / "nothing.onnx")
    assert main(["inspect", str(tmp_path / "nothing.onnx")]) == 1
