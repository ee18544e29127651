"""How models reach a node: the same files at the same path, or (tested on the cluster) the object store."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnxkit.errors import InvalidRequest, OnnxkitError
from onnxkit.serve.ray_shipping import land, ship


def folder(root: Path) -> Path:
    (root / "m" / "sub").mkdir(parents=True)
    (root / "m" / "model.onnx").write_bytes(b"graph bytes")
    (root / "m" / "sub" / "tokenizer.json").write_text("{}")
    return root / "m"


def test_a_node_with_the_same_files_serves_them_where_they_are(tmp_path: Path) -> None:
    model = folder(tmp_path)
    shipment = ship("m", model, "path")
    assert shipment.blob is None  # nothing went into an object store
    assert [rel for rel, _ in shipment.files] == ["model.onnx", "sub/tokenizer.json"]
    assert land(shipment, tmp_path / "home") == model
    (model / "extra.txt").write_text("a file the driver did not list does not matter")
    assert land(shipment, tmp_path / "home") == model
    single = ship("one", model / "model.onnx", "path")
    assert land(single, tmp_path / "home") == model / "model.onnx"


def test_a_node_whose_copy_differs_is_refused_by_name_in_path_mode(tmp_path: Path) -> None:
    model = folder(tmp_path)
    shipment = ship("m", model, "path")
    (model / "sub" / "tokenizer.json").write_text('{"changed": true}')
    with pytest.raises(OnnxkitError, match=r"model 'm': .* differs from the driver's copy"):
        land(shipment, tmp_path / "home")


def test_unknown_mode_and_missing_model_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="expected one of auto, object-store, path"):
        ship("m", folder(tmp_path), "rsync")
    with pytest.raises(InvalidRequest, match="does not exist"):
        ship("gone", tmp_path / "gone", "path")
