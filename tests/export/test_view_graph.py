"""onnxkit view: static renderings, and Netron served on loopback only."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from onnxkit.cli import main
from onnxkit.errors import InvalidRequest
from onnxkit.export import export
from onnxkit.view import render, serve, stop


@pytest.fixture(scope="module")
def model(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(tiny_bert_dir, "pooling", tmp_path_factory.mktemp("view") / "out") / "model.onnx"


def test_static_renderings(model: Path, tmp_path: Path) -> None:
    dot = render(model, tmp_path / "g.dot").read_text()
    assert dot.startswith("digraph onnx {") and '"in:input_ids"' in dot and '-> "out:embeddings"' in dot
    svg = render(model, tmp_path / "g.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<rect") > 20 and "MatMul" in svg
    page = render(model, tmp_path / "g.html").read_text()
    assert "<svg" in page and "inputs: input_ids, attention_mask, token_type_ids" in page
    assert not re.search(r"<script|https?://(?!www\.w3\.org)", page)  # self-contained
    with pytest.raises(InvalidRequest, match=r"\.dot, \.svg or \.html"):
        render(model, tmp_path / "g.png")


def test_cli_writes_output(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["view", str(model.parent), "--output", str(tmp_path / "g.html")]) == 0
    assert (tmp_path / "g.html").is_file() and "wrote" in capsys.readouterr().out


def test_netron_serves_on_loopback(model: Path) -> None:
    host, port = serve(model, 0, browse=False)
    try:
        assert host == "127.0.0.1" and port > 0
        assert httpx.get(f"http://{host}:{port}/", timeout=10).status_code == 200
    finally:
        stop((host, port))


def test_drawings_read_the_structure_without_weights(model: Path) -> None:
    import onnx

    from onnxkit.inspect import read_graph

    full = onnx.load(str(model)).graph
    graph = read_graph(model.parent)  # a folder means its model.onnx
    assert list(graph.node) == list(full.node)
    assert [v.name for v in graph.input] == [v.name for v in full.input]
    assert [v.name for v in graph.output] == [v.name for v in full.output]
    assert [(t.name, list(t.dims)) for t in graph.initializer] == [(t.name, list(t.dims)) for t in full.initializer]
    assert not any(t.raw_data or t.float_data or t.int64_data for t in graph.initializer)


def test_constant_nodes_are_not_drawn(model: Path) -> None:
    import onnx

    from onnxkit.view import rendering

    nodes = onnx.load(str(model), load_external_data=False).graph.node
    constants = sum(n.op_type == "Constant" for n in nodes)
    assert constants > 0  # the exporter emits them: the test means something
    assert rendering(model, ".svg").count("<rect") == len(nodes) - constants
    assert f"{len(nodes)} nodes ({constants} Constant nodes not drawn)" in rendering(model, ".html")
