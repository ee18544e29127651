"""The nodes that multiply by a GGUF's blocks: MatMulNBits and the min term, or onnxkit's BlockMatMul;
GatherBlockQuantized.

``gguf_graph`` decides which weight goes where; this module writes the nodes for one weight, so
that they can be checked alone against ``A · Wᵀ`` (tests/export/test_export_gguf_blocks.py).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxkit.export import kernels
from onnxkit.export.gguf_blocks import Blocks, packed, zero_points
from onnxkit.export.gguf_compute import Compute
from onnxkit.types import Array

MS = "com.microsoft"


@dataclass
class Rewrite:
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    block_sums: dict[str, str] = field(default_factory=dict)  # activation → its per-32 sums
    counts: collections.Counter[str] = field(default_factory=collections.Counter)

    def init(self, name: str, array: Array) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name


def _block_sums(rw: Rewrite, activation: str, k: int) -> str:
    """The activation summed over each block of 32 along K: computed once per activation."""
    if activation not in rw.block_sums:
        base = f"/gguf/block_sums/{len(rw.block_sums)}"
        shape = rw.init(f"{base}/shape", np.array([0, 0, k // 32, 32], np.int64))
        axes = rw.init(f"{base}/axes", np.array([-1], np.int64))
        rw.nodes.append(helper.make_node("Reshape", [activation, shape], [f"{base}/blocks"], name=f"{base}/Reshape"))
        rw.nodes.append(
            helper.make_node(
                "ReduceSum", [f"{base}/blocks", axes], [f"{base}/sums"], name=f"{base}/ReduceSum", keepdims=0
            )
        )
        rw.block_sums[activation] = f"{base}/sums"
    return rw.block_sums[activation]


def _nbits_node(rw: Rewrite, name: str, activation: str, blocks: Blocks, output: str, accuracy: int) -> str:
    """One MatMulNBits; returns the stem of its initializers (``{stem}.weight_Q4`` etc.)."""
    rows, cols = blocks.shape
    inputs = [
        activation,
        rw.init(f"{name}.weight_Q{blocks.bits}", packed(blocks)),
        rw.init(f"{name}.weight_scales", blocks.scale),
    ]
    zps = zero_points(blocks)
    if zps is not None:
        inputs.append(rw.init(f"{name}.weight_zp", zps))
    rw.nodes.append(
        helper.make_node(
            "MatMulNBits", inputs, [output], name=f"{name}/MatMulNBits", domain=MS,
            K=cols, N=rows, bits=blocks.bits, block_size=blocks.block, accuracy_level=accuracy,
        )
    )
    rw.counts[f"MatMulNBits {blocks.bits}-bit"] += 1
    return name


def block_matmul(rw: Rewrite, name: str, activation: str, blocks: Blocks, output: str) -> None:
    """One onnxkit BlockMatMul: the blocks as they are (codes, scales, min), float32 activations."""
    data = kernels.pack(blocks.q, blocks.scale, blocks.zero_point, blocks.offset, blocks.bits)
    weight = rw.init(f"{name}.weight_blocks", data.data)
    node = helper.make_node(kernels.OP, [activation, weight], [output], name=f"{name}/{kernels.OP}")
    node.domain = kernels.DOMAIN
    node.attribute.extend(helper.make_attribute(key, value) for key, value in data.attributes().items())
    rw.nodes.append(node)
    rw.counts[f"BlockMatMul {blocks.type_name}"] += 1


def matmul_nbits(
    rw: Rewrite, name: str, activation: str, blocks: Blocks, output: str, compute: Compute
) -> list[tuple[str, Blocks]]:
    """The nodes computing ``activation · blocksᵀ`` into ``output``; returns (stem, blocks) per MatMulNBits.

    With ``compute.kernel``, one BlockMatMul (and no MatMulNBits: returns []). Otherwise 8-bit blocks
    at accuracy_level 0 run as two exact 4-bit halves (``Blocks.nibbles``); a min per block adds
    ``(activation summed per 32) · offsetᵀ``.
    """
    if compute.kernel:
        block_matmul(rw, name, activation, blocks, output)
        return []
    accuracy = compute.accuracy_level
    blocks = blocks.recentred()  # before a split: the offset is per 32-block
    if compute.block is not None and compute.block < blocks.block:
        blocks = blocks.split(compute.block)
    product = output if blocks.offset is None else f"{name}/product"
    if blocks.bits == 8 and accuracy <= 1:  # 0 (unset) and 1 both keep float32 activations
        hi, lo = blocks.nibbles()
        lo = lo.recentred()
        parts = [(_nbits_node(rw, f"{name}/hi", activation, hi, f"{name}/hi/output_0", accuracy), hi)]
        parts.append((_nbits_node(rw, f"{name}/lo", activation, lo, f"{name}/lo/output_0", accuracy), lo))
        rw.nodes.append(
            helper.make_node("Add", [f"{name}/hi/output_0", f"{name}/lo/output_0"], [product], name=f"{name}/Add")
        )
        rw.counts["8-bit blocks as two 4-bit halves"] += 1
    else:
        parts = [(_nbits_node(rw, name, activation, blocks, product, accuracy), blocks)]
    offset = parts[-1][1].offset  # the part carrying the min (``lo`` of two halves), as recentred
    if offset is not None:
        sums = _block_sums(rw, activation, blocks.shape[1])
        mins = rw.init(f"{name}.weight_offsets", np.ascontiguousarray(offset.T))
        rw.nodes.append(helper.make_node("MatMul", [sums, mins], [f"{name}/offset"], name=f"{name}/offset/MatMul"))
        rw.nodes.append(helper.make_node("Add", [product, f"{name}/offset"], [output], name=f"{name}/offset/Add"))
        rw.counts["offset terms"] += 1
    return parts


def gather(rw: Rewrite, name: str, data: str, ids: str, stem: str, blocks: Blocks, output: str) -> None:
    inputs = [data, ids, f"{stem}.weight_scales"]
    if zero_points(blocks) is not None:
        inputs.append(f"{stem}.weight_zp")
    rw.nodes.append(
        helper.make_node(
            "GatherBlockQuantized", inputs, [output], name=name, domain=MS,
            bits=blocks.bits, block_size=blocks.block, gather_axis=0, quantize_axis=1,
        )
    )
