"""Single-op graphs the exporters rarely emit, each checked against onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import onnxkit.pytorch as okt

F32, I64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
rng = np.random.default_rng(0)


def _value(name: str, array: np.ndarray) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape))


def check(
    tmp_path: Path,
    nodes: list[onnx.NodeProto],
    inputs: dict[str, np.ndarray],
    outputs: dict[str, int],
    *,
    opset: int = 18,
    initializers: dict[str, np.ndarray] | None = None,
) -> None:
    graph = helper.make_graph(
        nodes,
        "g",
        [_value(n, a) for n, a in inputs.items()],
        [helper.make_tensor_value_info(n, t, None) for n, t in outputs.items()],
        initializer=[numpy_helper.from_array(a, n) for n, a in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = tmp_path / "op.onnx"
    onnx.save(model, str(path))
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, inputs)
    with torch.no_grad():
        got = okt.load(path).eval()(**inputs)
    got = [got] if isinstance(got, torch.Tensor) else list(got)
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-5, rtol=1e-5)


def x(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


CASES: dict[str, tuple[list[onnx.NodeProto], dict[str, np.ndarray], dict[str, int], int]] = {
    "slice-negative-steps": (
        [helper.make_node("Slice", ["x", "s", "e", "a", "k"], ["y"])],
        {"x": x(5, 6), "s": i64(-1, 4), "e": i64(-100, 0), "a": i64(0, 1), "k": i64(-2, -1)},
        {"y": F32},
        18,
    ),
    "split-13-input": (
        [helper.make_node("Split", ["x", "s"], ["a", "b"], axis=1)],
        {"x": x(2, 7), "s": i64(3, 4)},
        {"a": F32, "b": F32},
        13,
    ),
    "split-18-num-outputs": (
        [helper.make_node("Split", ["x"], ["a", "b", "c"], axis=0, num_outputs=3)],
        {"x": x(9, 2)},
        {"a": F32, "b": F32, "c": F32},
        18,
    ),
    "split-11-attr": (
        [helper.make_node("Split", ["x"], ["a", "b"], axis=-1, split=[1, 3])],
        {"x": x(2, 4)},
        {"a": F32, "b": F32},
        11,
    ),
    "pad-reflect-axes": (
        [helper.make_node("Pad", ["x", "p", "", "a"], ["y"], mode="reflect")],
        {"x": x(2, 3, 5), "p": i64(2, 1), "a": i64(2)},
        {"y": F32},
        18,
    ),
    "pad-constant-negative": (
        [helper.make_node("Pad", ["x", "p", "v"], ["y"])],
        {"x": x(3, 4), "p": i64(1, -1, 0, 2), "v": np.array(1.5, dtype=np.float32)},
        {"y": F32},
        14,
    ),
    "resize-nearest-half-pixel": (
        [helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest", nearest_mode="round_prefer_ceil")],
        {"x": x(1, 2, 3, 5), "s": np.array([1, 1, 1.5, 0.6], dtype=np.float32)},
        {"y": F32},
        18,
    ),
    "resize-linear-align-corners-sizes": (
        [
            helper.make_node(
                "Resize",
                ["x", "", "", "z"],
                ["y"],
                mode="linear",
                coordinate_transformation_mode="align_corners",
            )
        ],
        {"x": x(1, 2, 4, 4), "z": i64(1, 2, 7, 3)},
        {"y": F32},
        18,
    ),
    "resize-cubic": (
        [helper.make_node("Resize", ["x", "", "s"], ["y"], mode="cubic")],
        {"x": x(1, 1, 5, 5), "s": np.array([1, 1, 2, 2], dtype=np.float32)},
        {"y": F32},
        14,
    ),
    "conv-transpose-pads-stride": (
        [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 0, 0, 1])],
        {"x": x(1, 4, 5, 5), "w": x(4, 3, 3, 3), "b": x(3)},
        {"y": F32},
        17,
    ),
    "conv-same-upper": (
        [helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2])],
        {"x": x(2, 3, 11), "w": x(4, 3, 4)},
        {"y": F32},
        17,
    ),
    "maxpool-ceil-asymmetric": (
        [
            helper.make_node(
                "MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 1, 0], ceil_mode=1
            )
        ],
        {"x": x(1, 2, 7, 8)},
        {"y": F32},
        17,
    ),
    "averagepool-count-include-pad": (
        [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3], pads=[1, 1], count_include_pad=1)],
        {"x": x(2, 3, 9)},
        {"y": F32},
        17,
    ),
    "instance-and-group-norm": (
        [
            helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-3),
            helper.make_node("GroupNormalization", ["y", "g", "h"], ["z"], num_groups=2),
        ],
        {"x": x(2, 4, 3, 3), "s": x(4), "b": x(4), "g": x(2), "h": x(2)},
        {"z": F32},
        18,
    ),
    "topk-argmax-cumsum": (
        [
            helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1, largest=0),
            helper.make_node("ArgMax", ["t"], ["a"], axis=1, keepdims=0, select_last_index=1),
            helper.make_node("CumSum", ["x", "ax"], ["c"], exclusive=1, reverse=1),
        ],
        {
            "x": rng.permutation(18).reshape(3, 6).astype(np.float32),
            "t": np.array([[1, 3, 3, 0], [2, 2, 2, 2]], dtype=np.float32),
            "k": i64(2),
            "ax": np.array(1, dtype=np.int64),
        },
        {"v": F32, "i": I64, "a": I64, "c": F32},
        17,
    ),
    "gather-scatter": (
        [
            helper.make_node("GatherElements", ["x", "j"], ["g"], axis=1),
            helper.make_node("ScatterND", ["x", "n", "u"], ["s"]),
            helper.make_node("ScatterElements", ["x", "j", "w"], ["t"], axis=1, reduction="add"),
            helper.make_node("GatherND", ["x", "n"], ["h"]),
        ],
        {
            "x": x(3, 4),
            "j": np.array([[0, -1], [2, 1], [3, 3]], dtype=np.int64),
            "n": np.array([[1], [0]], dtype=np.int64),
            "u": x(2, 4),
            "w": x(3, 2),
        },
        {"g": F32, "s": F32, "t": F32, "h": F32},
        18,
    ),
    "onehot-trilu-tile-einsum": (
        [
            helper.make_node("OneHot", ["i", "d", "v"], ["o"], axis=0),
            helper.make_node("Trilu", ["x", "k"], ["t"], upper=0),
            helper.make_node("Tile", ["x", "r"], ["r2"]),
            helper.make_node("Einsum", ["x", "x"], ["e"], equation="ij,kj->ik"),
        ],
        {
            "i": np.array([0, 2, -1], dtype=np.int64),
            "d": np.array(4, dtype=np.int64),
            "v": np.array([0.5, 2.0], dtype=np.float32),
            "x": x(3, 3),
            "k": np.array(1, dtype=np.int64),
            "r": i64(2, 1),
        },
        {"o": F32, "t": F32, "r2": F32, "e": F32},
        17,
    ),
    "reductions-18": (
        [
            helper.make_node("ReduceMax", ["x", "a"], ["m"], keepdims=0),
            helper.make_node("ReduceLogSumExp", ["x", "a"], ["l"]),
            helper.make_node("ReduceProd", ["x"], ["p"], keepdims=0),
            helper.make_node("ReduceL1", ["x", "e"], ["n"], noop_with_empty_axes=1),
        ],
        {"x": x(2, 3, 4), "a": i64(0, -1), "e": np.zeros(0, dtype=np.int64)},
        {"m": F32, "l": F32, "p": F32, "n": F32},
        18,
    ),
    "reductions-attr-13-and-softmax-11": (
        [
            helper.make_node("ReduceMean", ["x"], ["m"], axes=[1]),
            helper.make_node("Softmax", ["x"], ["s"], axis=1),
            helper.make_node("Clip", ["x"], ["c"], min=-0.5, max=0.5),
        ],
        {"x": x(2, 3, 4)},
        {"m": F32, "s": F32, "c": F32},
        10,
    ),
    "depth-space-activations": (
        [
            helper.make_node("DepthToSpace", ["x"], ["d"], blocksize=2, mode="CRD"),
            helper.make_node("SpaceToDepth", ["d"], ["s"], blocksize=2),
            helper.make_node("HardSwish", ["s"], ["h"]),
            helper.make_node("Selu", ["h"], ["u"]),
            helper.make_node("PRelu", ["u", "slope"], ["y"]),
        ],
        {"x": x(1, 8, 2, 3), "slope": x(8, 1, 1)},
        {"y": F32},
        17,
    ),
    "int-math-and-shapes": (
        [
            helper.make_node("Div", ["a", "b"], ["q"]),
            helper.make_node("Mod", ["a", "b"], ["m"]),
            helper.make_node("Range", ["s", "l", "d"], ["r"]),
            helper.make_node("ConstantOfShape", ["sh"], ["c"], value=numpy_helper.from_array(i64(7))),
            helper.make_node("Expand", ["a", "sh"], ["e"]),
        ],
        {
            "a": np.array([[7], [-7]], dtype=np.int64),
            "b": np.array([2, -3], dtype=np.int64),
            "s": np.array(10, dtype=np.int64),
            "l": np.array(1, dtype=np.int64),
            "d": np.array(-3, dtype=np.int64),
            "sh": i64(2, 4),
        },
        {"q": I64, "m": I64, "r": I64, "c": I64, "e": I64},
        17,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_matches_onnxruntime(tmp_path: Path, case: str) -> None:
    nodes, inputs, outputs, opset = CASES[case]
    check(tmp_path, nodes, inputs, outputs, opset=opset)


def _branch(name: str, op: str) -> onnx.GraphProto:
    # Reads "x" from the enclosing graph, as If branches do.
    return helper.make_graph(
        [helper.make_node(op, ["x"], [f"{name}_out"])],
        name,
        [],
        [helper.make_tensor_value_info(f"{name}_out", F32, None)],
    )


@pytest.mark.parametrize("flag", [True, False])
def test_if_runs_the_chosen_branch_with_outer_values(tmp_path: Path, flag: bool) -> None:
    node = helper.make_node("If", ["c"], ["y"], then_branch=_branch("then", "Relu"), else_branch=_branch("else", "Neg"))
    check(tmp_path, [node], {"c": np.array(flag), "x": x(3, 2)}, {"y": F32}, opset=17)


def test_loop_carries_state_and_stacks_scan_outputs(tmp_path: Path) -> None:
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "x"], ["acc_out"]),  # x comes from the outer graph
            helper.make_node("Cast", ["i"], ["i_f"], to=F32),
            helper.make_node("Mul", ["acc_out", "i_f"], ["scan"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", I64, []),
            helper.make_tensor_value_info("cond_in", BOOL, []),
            helper.make_tensor_value_info("acc_in", F32, None),
        ],
        [
            helper.make_tensor_value_info("cond_out", BOOL, []),
            helper.make_tensor_value_info("acc_out", F32, None),
            helper.make_tensor_value_info("scan", F32, None),
        ],
    )
    node = helper.make_node("Loop", ["n", "", "acc"], ["final", "stacked"], body=body)
    inputs = {"n": np.array(4, dtype=np.int64), "acc": x(2, 3), "x": x(2, 3)}
    check(tmp_path, [node], inputs, {"final": F32, "stacked": F32}, opset=17)


def test_dropout_is_active_only_in_train_mode(tmp_path: Path) -> None:
    node = helper.make_node("Dropout", ["x", "r"], ["y"])
    inputs = {"x": np.ones((64, 64), dtype=np.float32)}
    check(tmp_path, [node], inputs, {"y": F32}, opset=17, initializers={"r": np.array(0.5, dtype=np.float32)})
    module = okt.load(tmp_path / "op.onnx").train()
    with torch.no_grad():
        y = module(inputs["x"])
    assert set(np.unique(y.numpy()).tolist()) == {0.0, 2.0}  # dropped, or scaled by 1 / (1 - 0.5)


def test_unknown_attribute_fails_at_load(tmp_path: Path) -> None:
    node = helper.make_node("Relu", ["x"], ["y"], name="relu_1", flavour="spicy")
    graph = helper.make_graph([node], "g", [_value("x", x(2))], [helper.make_tensor_value_info("y", F32, None)])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(okt.UnsupportedOp, match=r"attribute\(s\) \['flavour'\] of op 'Relu' at node 'relu_1'"):
        okt.load(path)


def test_model_local_functions_are_inlined(tmp_path: Path) -> None:
    double_relu = helper.make_function(
        "custom.fns",
        "DoubleRelu",
        ["a"],
        ["b"],
        [helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Add", ["r", "r"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    graph = helper.make_graph(
        [helper.make_node("DoubleRelu", ["x"], ["y"], domain="custom.fns")],
        "g",
        [_value("x", x(2, 3))],
        [helper.make_tensor_value_info("y", F32, None)],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom.fns", 1)],
        functions=[double_relu],
    )
    path = tmp_path / "functions.onnx"
    onnx.save(model, str(path))
    data = x(2, 3)
    with torch.no_grad():
        np.testing.assert_allclose(okt.load(path)(data).numpy(), 2 * np.maximum(data, 0), atol=1e-6)


def _gelu_nodes(divisor: str) -> list[onnx.NodeProto]:
    return [
        helper.make_node("Div", ["h", divisor], ["t"]),
        helper.make_node("Erf", ["t"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["u"]),
        helper.make_node("Mul", ["h", "u"], ["v"]),
        helper.make_node("Mul", ["v", "half"], ["y"]),
    ]


GELU_CONSTANTS = {
    "sqrt2": np.array(np.sqrt(2), dtype=np.float32),
    "two": np.array(2.0, dtype=np.float32),
    "one": np.array(1.0, dtype=np.float32),
    "half": np.array(0.5, dtype=np.float32),
}


@pytest.mark.parametrize("divisor", ["sqrt2", "two"])  # only the first is GELU; both must stay right
def test_linear_and_gelu_fusions_match_onnxruntime(tmp_path: Path, divisor: str) -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["b", "m"], ["h"]),
        *_gelu_nodes(divisor),
    ]
    weights = {"w": x(6, 5), "b": x(5), **GELU_CONSTANTS}
    check(tmp_path, nodes, {"x": x(2, 3, 6)}, {"y": F32}, opset=17, initializers=weights)
    fused, plain = okt.load(tmp_path / "op.onnx"), okt.load(tmp_path / "op.onnx", fuse=False)
    assert len(plain.graph.nodes) == 7
    assert len(fused.graph.nodes) == (2 if divisor == "sqrt2" else 6)


def test_matmul_read_twice_is_not_fused(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["y"]),
        helper.make_node("Relu", ["m"], ["z"]),
    ]
    check(tmp_path, nodes, {"x": x(4, 6)}, {"y": F32, "z": F32}, opset=17, initializers={"w": x(6, 5), "b": x(5)})
    assert len(okt.load(tmp_path / "op.onnx").graph.nodes) == 3


RNN_CASES: dict[str, tuple[onnx.NodeProto, dict[str, np.ndarray], dict[str, int]]] = {
    "lstm-bidirectional-peepholes-initial-state": (
        helper.make_node(
            "LSTM",
            ["x", "w", "r", "b", "", "h0", "c0", "p"],
            ["y", "yh", "yc"],
            hidden_size=3,
            direction="bidirectional",
        ),
        {
            "x": x(5, 2, 4),
            "w": x(2, 12, 4),
            "r": x(2, 12, 3),
            "b": x(2, 24),
            "h0": x(2, 2, 3),
            "c0": x(2, 2, 3),
            "p": x(2, 9),
        },
        {"y": F32, "yh": F32, "yc": F32},
    ),
    "gru-reverse-reset-after": (
        helper.make_node("GRU", ["x", "w", "r", "b"], ["y", "yh"], hidden_size=3, direction="reverse"),
        {"x": x(4, 2, 5), "w": x(1, 9, 5), "r": x(1, 9, 3), "b": x(1, 18)},
        {"y": F32, "yh": F32},
    ),
    "rnn-relu": (
        helper.make_node("RNN", ["x", "w", "r"], ["y", "yh"], hidden_size=3, activations=["Relu"]),
        {"x": x(4, 2, 5), "w": x(1, 3, 5), "r": x(1, 3, 3)},
        {"y": F32, "yh": F32},
    ),
}


@pytest.mark.parametrize("case", sorted(RNN_CASES))
def test_recurrent_ops_match_onnxruntime(tmp_path: Path, case: str) -> None:
    node, inputs, outputs = RNN_CASES[case]
    check(tmp_path, [node], inputs, outputs, opset=17)


def test_batch_first_layout_is_the_transpose(tmp_path: Path) -> None:
    # onnxruntime has no layout=1 kernel: check it against our layout=0 on transposed data instead.
    from onnxkit.pytorch.ops_rnn import LSTM

    data, w, r, b = (torch.from_numpy(a) for a in (x(5, 2, 4), x(2, 12, 4), x(2, 12, 3), x(2, 24)))
    h0, c0 = torch.from_numpy(x(2, 2, 3)), torch.from_numpy(x(2, 2, 3))
    seq_first = LSTM(data, w, r, b, None, h0, c0, direction="bidirectional", hidden_size=3)
    batch_first = LSTM(
        data.transpose(0, 1),
        w,
        r,
        b,
        None,
        h0.transpose(0, 1),
        c0.transpose(0, 1),
        direction="bidirectional",
        hidden_size=3,
        layout=1,
    )
    torch.testing.assert_close(batch_first[0], seq_first[0].permute(2, 0, 1, 3))
    torch.testing.assert_close(batch_first[1], seq_first[1].transpose(0, 1))
    torch.testing.assert_close(batch_first[2], seq_first[2].transpose(0, 1))
