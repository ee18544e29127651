"""onnxkit.pytorch.load: parity with onnxruntime, dynamic shapes, weights, gradients, errors."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper
from torch import Tensor

import onnxkit.pytorch as okt
from onnxkit.errors import InvalidRequest

TOL = 1e-5


def ort_run(path: Path, args: tuple[np.ndarray, ...]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    out: np.ndarray = session.run(None, dict(zip(names, args, strict=True)))[0]
    return out


def torch_run(module: torch.nn.Module, args: tuple[np.ndarray, ...]) -> np.ndarray:
    with torch.no_grad():
        out: np.ndarray = module(*args).numpy()
    return out


def text_batch(batch: int, seq: int, vocab: int = 30000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(batch * 100 + seq)
    ids = rng.integers(1000, vocab, (batch, seq))
    ids[:, 0] = 101
    mask = np.ones((batch, seq), dtype=np.int64)
    mask[-1, seq // 2 :] = 0  # one padded row
    return ids, mask, np.zeros((batch, seq), dtype=np.int64)


@pytest.mark.parametrize(
    ("task", "exporter", "opset"),
    [
        ("default", "legacy", 14),
        ("pooling", "legacy", 14),
        ("pooling", "legacy", 17),
        ("default", "dynamo", 18),
        ("pooling", "dynamo", 18),
    ],
)
def test_minilm_matches_onnxruntime(
    minilm_onnx: Callable[[str, str, int], Path], task: str, exporter: str, opset: int
) -> None:
    path = minilm_onnx(task, exporter, opset)
    module = okt.load(path).eval()
    for batch, seq in [(2, 9), (5, 23), (1, 64)]:  # new shapes, same module: no reload
        args = text_batch(batch, seq)
        ours, theirs = torch_run(module, args), ort_run(path, args)
        assert ours.shape == theirs.shape == ((batch, 384) if task == "pooling" else (batch, seq, 384))
        np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)


@pytest.mark.parametrize("kind", ["mlp", "cnn", "transactions", "recurrent", "bert"])
@pytest.mark.parametrize(
    ("exporter", "opset"), [("legacy", 14), ("legacy", 15), ("legacy", 16), ("legacy", 18), ("dynamo", 18)]
)
def test_tiny_models_match_onnxruntime(
    tiny_onnx: Callable[[str, str, int], tuple[Path, Callable[[], tuple[Tensor, ...]]]],
    kind: str,
    exporter: str,
    opset: int,
) -> None:
    path, make = tiny_onnx(kind, exporter, opset)
    module = okt.load(path).eval()
    for _ in range(2):
        args = tuple(a.numpy() for a in make())
        np.testing.assert_allclose(torch_run(module, args), ort_run(path, args), atol=TOL, rtol=0)


def test_transactions_model_takes_new_batch_and_sequence_lengths(
    tiny_onnx: Callable[[str, str, int], tuple[Path, Callable[[], tuple[Tensor, ...]]]],
) -> None:
    from pytorch_models import transaction_args

    path, _ = tiny_onnx("transactions", "legacy", 13)  # seed 001 exported with opset 13
    module = okt.load(path).eval()
    assert module.input_names == ["dates", "input_ids", "amounts"]
    assert module.output_names == ["logits"]
    for batch, seq in [(1, 1), (3, 50), (8, 5)]:
        args = tuple(a.numpy() for a in transaction_args(batch, seq))
        ours = torch_run(module, args)
        assert ours.shape == (batch, 4)
        np.testing.assert_allclose(ours, ort_run(path, args), atol=TOL, rtol=0)


def test_inputs_by_position_or_by_name(
    tiny_onnx: Callable[[str, str, int], tuple[Path, Callable[[], tuple[Tensor, ...]]]],
) -> None:
    path, make = tiny_onnx("transactions", "dynamo", 18)
    module = okt.load(path).eval()
    dates, ids, amounts = make()
    with torch.no_grad():
        positional = module(dates, ids, amounts)
        named = module(amounts=amounts, dates=dates, input_ids=ids)
        mixed = module(dates, input_ids=ids, amounts=amounts)
    assert torch.equal(positional, named) and torch.equal(positional, mixed)
    with pytest.raises(InvalidRequest, match=r"missing input\(s\) \['amounts'\]"):
        module(dates, ids)
    with pytest.raises(InvalidRequest, match=r"unknown input 'amount'.*'amounts'"):
        module(dates, ids, amount=amounts)


def test_every_float_initializer_is_a_parameter_named_after_it(
    tiny_onnx: Callable[[str, str, int], tuple[Path, Callable[[], tuple[Tensor, ...]]]],
) -> None:
    path, _ = tiny_onnx("bert", "legacy", 14)
    model = onnx.load(str(path))
    module = okt.load(path)
    params = dict(module.named_parameters())
    buffers = dict(module.named_buffers())
    by_onnx = {onnx_name: attr for attr, onnx_name in module.initializer_names.items()}
    matmul_weights = {i for n in model.graph.node if n.op_type in ("MatMul", "Gemm") for i in n.input}
    assert len(by_onnx) == len(model.graph.initializer)
    seen_matmul = 0
    for init in model.graph.initializer:
        value = numpy_helper.to_array(init)
        attr = by_onnx[init.name]
        if value.dtype == np.float32 and value.ndim > 0:
            assert params[attr].requires_grad, init.name
            np.testing.assert_array_equal(params[attr].detach().numpy(), value)
            seen_matmul += init.name in matmul_weights
        else:
            assert attr in buffers and attr not in params, init.name
    assert seen_matmul >= 8  # legacy export stores Linear weights pre-transposed for MatMul: trainable too


def test_backward_reaches_every_parameter(minilm_onnx: Callable[[str, str, int], Path]) -> None:
    module = okt.load(minilm_onnx("pooling", "legacy", 14)).train()
    out = module(*text_batch(3, 12))
    (out * torch.randn_like(out)).sum().backward()
    params = dict(module.named_parameters())
    assert len(params) >= 100
    missing = [name for name, p in params.items() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert missing == []


def _one_node_model(op: str, domain: str, opset: int) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    node = helper.make_node(op, ["x"], ["y"], name="the_node", domain=domain)
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=opsets)


def test_unsupported_op_fails_at_load_naming_op_domain_opset_and_node(tmp_path: Path) -> None:
    path = tmp_path / "custom.onnx"
    onnx.save(_one_node_model("FancyGelu", "com.example", 17), str(path))
    with pytest.raises(okt.UnsupportedOp, match=r"'FancyGelu' \(domain 'com.example', opset 1\) at node 'the_node'"):
        okt.load(path)
    onnx.save(_one_node_model("StringNormalizer", "", 17), str(path))
    with pytest.raises(
        okt.UnsupportedOp, match=r"'StringNormalizer' \(domain 'ai.onnx', opset 17\) at node 'the_node'"
    ):
        okt.load(path)


def test_runs_where_onnxruntime_is_absent(
    tiny_onnx: Callable[[str, str, int], tuple[Path, Callable[[], tuple[Tensor, ...]]]],
) -> None:
    path, make = tiny_onnx("mlp", "legacy", 14)
    x = make()[0].numpy()
    expected = ort_run(path, (x,))
    script = (
        "import sys, numpy as np, torch\n"
        "sys.modules['onnxruntime'] = None  # any import of it now fails\n"
        "import onnxkit.pytorch as okt\n"
        f"x = np.array({x.tolist()}, dtype=np.float32)\n"
        f"print(okt.load({str(path)!r}).eval()(x).tolist())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    np.testing.assert_allclose(np.array(eval(done.stdout)), expected, atol=TOL)


@pytest.mark.parametrize("kind", ["mlp", "cnn", "transactions", "recurrent", "bert"])
@pytest.mark.parametrize(("exporter", "opset"), [("legacy", 14), ("dynamo", 18)])
def test_backward_reaches_every_parameter_of_tiny_models(
    tiny_onnx: Callable[[str, str, int], tuple[Path, Callable[[], tuple[Tensor, ...]]]],
    kind: str,
    exporter: str,
    opset: int,
) -> None:
    path, make = tiny_onnx(kind, exporter, opset)
    module = okt.load(path).train()
    out = module(*make())
    (out * torch.randn_like(out)).sum().backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert missing == []


class _Branchy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        def positive(v: Tensor) -> Tensor:
            return torch.relu(self.linear(v))

        def negative(v: Tensor) -> Tensor:
            return -self.linear(v)

        return torch.cond(x.sum() > 0, positive, negative, (x,))  # type: ignore[no-any-return]


class _Looping(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for _ in range(x.shape[0]):  # as many steps as rows: a data-dependent trip count
            h = torch.tanh(self.linear(h))
        return h


def test_if_and_loop_from_the_exporters(tmp_path: Path) -> None:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        branchy = tmp_path / "if.onnx"
        torch.onnx.export(
            _Branchy().eval(),
            (torch.randn(3, 4),),
            str(branchy),
            input_names=["x"],
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("b")},),
            verbose=False,
        )
        looping = tmp_path / "loop.onnx"
        torch.onnx.export(
            torch.jit.script(_Looping().eval()),
            (torch.randn(3, 4),),
            str(looping),
            input_names=["x"],
            dynamo=False,
            opset_version=17,
            dynamic_axes={"x": {0: "b"}},
        )
    assert "If" in {n.op_type for n in onnx.load(str(branchy)).graph.node}
    assert "Loop" in {n.op_type for n in onnx.load(str(looping)).graph.node}
    for path in (branchy, looping):
        module = okt.load(path).eval()
        for sign, rows in [(1.0, 2), (-1.0, 5)]:
            x = (np.abs(np.random.default_rng(rows).standard_normal((rows, 4))) * sign).astype(np.float32)
            np.testing.assert_allclose(torch_run(module, (x,)), ort_run(path, (x,)), atol=TOL, rtol=0)


@pytest.mark.parametrize(("exporter", "opset"), [("legacy", 17), ("dynamo", 18)])
def test_fused_and_plain_modules_agree_in_values_and_gradients(
    minilm_onnx: Callable[[str, str, int], Path], exporter: str, opset: int
) -> None:
    path = minilm_onnx("default", exporter, opset)
    fused, plain = okt.load(path), okt.load(path, fuse=False)
    assert len(fused.graph.nodes) < len(plain.graph.nodes) - 40  # 36 Linear layers and 6 GELUs
    args = text_batch(2, 10)
    weights = torch.randn(2, 10, 384)
    outputs = []
    for module in (fused, plain):
        out = module(*args)
        (out * weights).sum().backward()
        outputs.append(out.detach())
    np.testing.assert_allclose(outputs[0].numpy(), outputs[1].numpy(), atol=TOL, rtol=0)
    for (name, a), (_, b) in zip(fused.named_parameters(), plain.named_parameters(), strict=True):
        assert a.grad is not None and b.grad is not None, name
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-3, msg=name)
