"""GGUF blocks → MatMulNBits form: decoded exactly as ggml does, and multiplied exactly by onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from tiny_gguf import Q2_K, Q4_1, Q4_K, Q5_1, Q5_K, QUANTIZED, encode, realistic_weights

from onnxkit.errors import InvalidRequest
from onnxkit.export import gguf_blocks
from onnxkit.export.gguf_compute import LM_HEAD, Compute, Plan
from onnxkit.export.gguf_nodes import Rewrite, matmul_nbits


@pytest.mark.parametrize("name", list(QUANTIZED))
def test_blocks_decode_as_ggml_does(name: str) -> None:
    from gguf import GGMLQuantizationType, quants

    raw = encode(realistic_weights(6, 512, 0), QUANTIZED[name])
    reference = quants.dequantize(raw, GGMLQuantizationType(QUANTIZED[name]))  # gguf-py's own ggml port
    blocks = gguf_blocks.decode("w", QUANTIZED[name], raw, 6, 512)
    assert blocks.type_name == name
    assert blocks.q.max() < 2**blocks.bits
    np.testing.assert_array_equal(blocks.dequantize(), reference)


@pytest.mark.parametrize("name", list(QUANTIZED))
def test_random_bytes_decode_as_ggml_does(name: str) -> None:
    """Every bit of every field, not only what an encoder happens to write (scales kept finite)."""
    from gguf import GGMLQuantizationType, quants

    per_block, nbytes = gguf_blocks.BLOCK_BYTES[QUANTIZED[name]]
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, (4, 512 // per_block, nbytes), dtype=np.uint8)
    halves = [0, 2] if QUANTIZED[name] in (Q4_1, Q5_1, Q4_K, Q5_K) else [nbytes - 2 if name == "Q6_K" else 0]
    for at in halves:  # fp16 scales in [2**-14, 2**-7): no inf/NaN
        raw[..., at : at + 2] = (rng.integers(0x0400, 0x2000, raw.shape[:2], dtype=np.uint16)
                                 .view(np.uint8).reshape(*raw.shape[:2], 2))
    raw = raw.reshape(4, -1)
    reference = quants.dequantize(raw, GGMLQuantizationType(QUANTIZED[name]))
    np.testing.assert_array_equal(gguf_blocks.decode("w", QUANTIZED[name], raw, 4, 512).dequantize(), reference)


@pytest.mark.parametrize("compute", [Compute(0), Compute(4), Compute(0, 16), Compute(4, 16)], ids=str)
@pytest.mark.parametrize("name", list(QUANTIZED))
def test_matmulnbits_multiplies_with_the_exactrealistic_weights(name: str, compute: Compute) -> None:
    """The nodes (8-bit as two 4-bit halves at level 0, plus the min term) against float64 A·Wᵀ.

    Level 0 keeps activations in float32: exact to float rounding. Level 4 quantizes them to int8
    per block (the layout still has to be right: within 2 %). Blocks of 16 hold the same weights."""
    k, n = 512, 96
    accuracy = compute.accuracy_level
    blocks = gguf_blocks.decode("w", QUANTIZED[name], encode(realistic_weights(n, k, 2), QUANTIZED[name]), n, k)
    rw = Rewrite()
    matmul_nbits(rw, "layer", "A", blocks, "Y", compute)
    graph = helper.make_graph(
        rw.nodes, "g",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, None, k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, None, n])],
        rw.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a = np.random.default_rng(3).standard_normal((1, 5, k)).astype(np.float32)
    (y,) = session.run(None, {"A": a})
    want = a[0].astype(np.float64) @ blocks.dequantize().astype(np.float64).T
    assert np.abs(y[0] - want).max() <= (1e-5 if accuracy == 0 else 2e-2) * np.abs(want).max()
    assert (rw.counts["offset terms"] == 1) == (QUANTIZED[name] in gguf_blocks.WITH_MIN)
    split = accuracy == 0 and blocks.bits == 8
    assert rw.counts["MatMulNBits 4-bit"] == (2 if split else blocks.bits == 4)
    sizes = {a.i for node in rw.nodes for a in node.attribute if a.name == "block_size"}
    assert sizes == {compute.block or blocks.block}
    # 4-bit codes with a min use the default zero point (no zero-point input, the faster kernel).
    if blocks.bits == 4 and blocks.offset is not None:
        assert [len(node.input) for node in rw.nodes if node.op_type == "MatMulNBits"] == [3]


@pytest.mark.parametrize("name", ["Q4_1", "Q4_K", "Q5_1", "Q8_0"])
def test_recentred_and_split_blocks_hold_the_same_values(name: str) -> None:
    blocks = gguf_blocks.decode("w", QUANTIZED[name], encode(realistic_weights(8, 256, 4), QUANTIZED[name]), 8, 256)
    values = blocks.dequantize()
    split = blocks.split(16)
    assert split.block == 16 and split.scale.shape == (8, 16)
    np.testing.assert_array_equal(split.dequantize(), values)
    recentred = blocks.recentred()
    if blocks.bits == 4 and blocks.offset is not None:
        assert (recentred.zero_point, gguf_blocks.zero_points(recentred)) == (8, None)
        # The new offset is rounded once to float32: values agree to float rounding.
        np.testing.assert_allclose(recentred.dequantize(), values, rtol=0, atol=2e-7 * np.abs(values).max())
    else:
        assert recentred is blocks
    with pytest.raises(ValueError, match="cannot split into blocks of 8"):
        blocks.split(8)


def test_unsupported_type_names_the_tensor_and_the_supported_types() -> None:
    raw = encode(realistic_weights(2, 256, 0), Q2_K)
    with pytest.raises(InvalidRequest, match=r"'blk\.3\.ffn_down\.weight' has type Q2_K.*supported types: F32, F16"):
        gguf_blocks.decode("blk.3.ffn_down.weight", Q2_K, raw, 2, 256)


def test_a_plan_names_each_weights_compute() -> None:
    plan = Plan(layers=Compute(0), lm_head=Compute(4, 16), projections=(("o", Compute(4)),))
    assert plan.of(LM_HEAD) == Compute(4, 16)
    assert plan.of("model.layers.3.attn.o_proj.MatMul.weight") == Compute(4)
    assert plan.of("model.layers.3.attn.qkv_proj.MatMul.weight") == Compute(0)
    assert plan.card()["projections"] == {"o": {"op": "MatMulNBits", "accuracy_level": 4, "block": "gguf"}}
    with pytest.raises(ValueError, match=r"projections \['out'\] are not the builder's"):
        Plan(Compute(0), Compute(0), (("out", Compute(4)),))
    with pytest.raises(ValueError, match="accuracy_level 5 is not MatMulNBits'"):
        Compute(5)
    with pytest.raises(ValueError, match="BlockMatMul keeps float32 activations"):
        Compute(4, kernel=True)
