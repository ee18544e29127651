"""The parity gate really fails: corrupted weights, impossible tolerances, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxkit.export import export
from onnxkit.export.transformer import reverify
from onnxkit.export.verify import ParityError, assert_close, max_diffs, mean_cosine


def test_corrupted_weight_fails_reverification(tiny_bert_dir: Path, tmp_path: Path) -> None:
    out = export(tiny_bert_dir, "pooling", tmp_path / "out")
    assert max(reverify(out, tiny_bert_dir).values()) < 1e-4

    model = onnx.load(str(out / "model.onnx"))
    biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weights = numpy_helper.to_array(biggest).copy()
    weights.flat[::7] += 0.5
    biggest.CopyFrom(numpy_helper.from_array(weights, biggest.name))
    onnx.save(model, str(out / "model.onnx"))
    with pytest.raises(ParityError, match=r"embeddings: max \|diff\|"):
        reverify(out, tiny_bert_dir)


def test_parity_failure_writes_nothing(tiny_bert_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ParityError, match="nothing was written"):
        export(tiny_bert_dir, "default", tmp_path / "out", atol=1e-12)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []  # the staging folder is gone too


def test_diff_helpers() -> None:
    a = np.ones((2, 3), dtype=np.float32)
    diffs = max_diffs({"x": a}, {"x": a + 0.25})
    assert diffs == {"x": 0.25}
    with pytest.raises(ParityError, match="x: max"):
        assert_close(diffs, 0.1, "a test")
    with pytest.raises(ParityError, match="shape"):
        max_diffs({"x": a}, {"x": a[:1]})
    with pytest.raises(ParityError):
        assert_close({"x": float("nan")}, 1.0, "NaN")
    assert mean_cosine(a, 2 * a) == pytest.approx(1.0)
