"""export_module on seed 001's transaction model: dates, token ids per transaction, amounts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from onnxkit.errors import InvalidRequest
from onnxkit.export import export_module
from onnxkit.export.verify import ParityError


class TransactionModel(torch.nn.Module):
    """Transactions → one row of class logits per customer: text ids pooled per transaction,
    joined with date features and the amount, then a GRU over the transactions."""

    def __init__(self, vocab: int = 1000, dim: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)
        self.mix = torch.nn.Linear(dim + 6 + 1, dim)
        self.gru = torch.nn.GRU(dim, dim, batch_first=True)
        self.head = torch.nn.Linear(dim, classes)

    def forward(self, dates: torch.Tensor, input_ids: torch.Tensor, amounts: torch.Tensor) -> torch.Tensor:
        text = self.embed(input_ids).mean(dim=2)  # [batch, seq, dim]
        x = torch.relu(self.mix(torch.cat([text, dates, amounts.unsqueeze(-1)], dim=-1)))
        _, last = self.gru(x)
        return self.head(last[-1])


def _inputs(batch: int, seq: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(batch * 100 + seq)
    return (
        torch.randn(batch, seq, 6, generator=g),
        torch.randint(0, 1000, (batch, seq, 20), generator=g),
        torch.randn(batch, seq, generator=g),
    )


AXES = {
    "dates": {0: "batch", 1: "seq"},
    "input_ids": {0: "batch", 1: "seq"},
    "amounts": {0: "batch", 1: "seq"},
    "logits": {0: "batch"},
}
NAMES = {"input_names": ["dates", "input_ids", "amounts"], "output_names": ["logits"]}


def test_transaction_model_exports_with_dynamic_batch_and_seq(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TransactionModel().eval()
    path = export_module(model, _inputs(2, 30), tmp_path / "tx.onnx", dynamic_axes=AXES, opset=17, **NAMES)
    assert path == tmp_path / "tx.onnx" and sorted(p.name for p in tmp_path.iterdir()) == ["tx.onnx"]
    onnx.checker.check_model(str(path), full_check=True)

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in sess.get_inputs()}
    assert shapes == {
        "dates": ["batch", "seq", 6],
        "input_ids": ["batch", "seq", 20],
        "amounts": ["batch", "seq"],
    }
    assert sess.get_outputs()[0].shape == ["batch", 4]
    for batch, seq in ((1, 5), (7, 300)):
        feeds = _inputs(batch, seq)
        (got,) = sess.run(None, dict(zip(NAMES["input_names"], (t.numpy() for t in feeds), strict=True)))
        with torch.no_grad():
            want = model(*feeds).numpy()
        assert got.shape == (batch, 4)
        np.testing.assert_allclose(got, want, atol=1e-4)
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert json.dumps(meta)  # metadata is plain strings
    assert meta["exported_by"] == "onnxkit"


class ShapeBaked(torch.nn.Module):
    """int() makes the tracer bake the traced batch size in: the graph is wrong for other batches."""

    def __init__(self, reshape: bool) -> None:
        super().__init__()
        self.reshape = reshape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.shape[0])
        return x.reshape(n, -1).sum(dim=1) if self.reshape else x * float(n)


@pytest.mark.parametrize(("reshape", "message"), [(True, "fails on random inputs"), (False, r"max \|diff\|")])
def test_module_that_is_not_dynamic_fails_verification(tmp_path: Path, reshape: bool, message: str) -> None:
    with pytest.raises(ParityError, match=message):
        export_module(
            ShapeBaked(reshape),
            (torch.randn(2, 3),),
            tmp_path / "bad.onnx",
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )
    assert list(tmp_path.iterdir()) == []


def test_wrong_number_of_names(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="2 example inputs but 1 input_names"):
        export_module(
            ShapeBaked(False),
            (torch.ones(2), torch.ones(2)),
            tmp_path / "x.onnx",
            input_names=["x"],
            output_names=["y"],
        )
