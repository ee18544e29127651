"""Put a GGUF's own blocks into an onnxruntime-genai graph that the builder laid out in fp32.

The genai builder lays out the Llama graph (attention, rotary, KV cache, genai_config.json) from the
float Hugging Face folder; this module then swaps every weight that the GGUF stores quantized for
those very blocks, so that onnxruntime computes with the weights llama.cpp computes with:

* each ``MatMul`` → ``MatMulNBits`` (com.microsoft) with the GGUF's codes, scales and zero point
  (8-bit codes as two exact 4-bit halves at accuracy_level 0, see ``Blocks.nibbles``); for types
  with a min (Q4_1, Q5_1, Q4_K, Q5_K) the graph adds the min's share,
  ``(A summed per 32-block) · offsetᵀ`` (Reshape, ReduceSum, a MatMul of K/32 columns, Add), which
  is exact where a rounded integer zero point is not, and fast where float zero points are not
  (4-bit codes with a min move to the default zero point 8, see ``Blocks.recentred``);
* MatMuls reading one activation (gate and up) become one MatMulNBits and a Split: per token,
  each node costs a few microseconds beyond its arithmetic;
* how activations are multiplied (accuracy level, block length) is ``gguf_compute``'s plan;
* the token embedding → ``GatherBlockQuantized`` on the same blocks (sharing lm_head's bytes when
  the two are tied) for types without a min; otherwise a float table, dequantized exactly;
* F32/F16/BF16 weights stay float.

The builder's fp32 weights are the dequantized GGUF (via transformers), so every swap is checked:
the blocks must dequantize to the weight they replace, which catches a changed builder layout.
Writing the graph ourselves would duplicate the builder's attention/rotary/cache layout and
genai_config for no gain in exactness; replacing the builder's int4 initializers would tie us to
its packing and quantizer options, while an fp32 graph has one plain MatMul per weight.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxkit.errors import SupplyError
from onnxkit.export import kernels
from onnxkit.export.gguf import GGUFFile, GGUFTensor
from onnxkit.export.gguf_blocks import LAYOUT, Blocks, concat, packed, zero_points
from onnxkit.export.gguf_compute import LM_HEAD, Compute, Plan, default_plan
from onnxkit.export.gguf_nodes import Rewrite, gather, matmul_nbits
from onnxkit.types import JSON, Array

_LAYER = re.compile(r"model\.layers\.(\d+)\.(attn|mlp)\.(qkv|q|k|v|o|gate|up|down)_proj\.MatMul\.weight")
_GGUF_NAMES = {
    "q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output",
    "gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down",
}


@dataclass(frozen=True)
class Part:
    """One GGUF tensor feeding (a slice of) a graph weight; ``heads`` undoes llama.cpp's Q/K permutation."""

    tensor: GGUFTensor
    heads: int | None = None


def _unpermute(rows: int, heads: int) -> Array:
    """Row order that turns llama.cpp's interleaved rotary halves back into Hugging Face's layout."""
    return np.arange(rows).reshape(heads, rows // heads // 2, 2).swapaxes(1, 2).reshape(-1)


@dataclass(frozen=True)
class Decoded:
    """A part's blocks (None for a float tensor) and float values, rows in the graph's order."""

    part: Part
    blocks: Blocks | None
    values: Array  # float32 [rows, cols]

    @property
    def layout(self) -> tuple[int, ...]:
        return (0,) if self.blocks is None else LAYOUT[self.blocks.type]


def decode(part: Part) -> Decoded:
    tensor = part.tensor
    order = None if part.heads is None else _unpermute(tensor.rows, part.heads)
    if not tensor.quantized:
        values = tensor.values()
        return Decoded(part, None, values if order is None else values[order])
    blocks = tensor.blocks()
    if order is not None:
        blocks = blocks.take_rows(order)
    return Decoded(part, blocks, blocks.dequantize())


def sources(gguf: GGUFFile, weight: str) -> list[Part] | None:
    """The GGUF tensors behind a builder weight initializer, in the order the builder packed them."""
    arch = gguf.architecture
    n_head = int(gguf.field(f"{arch}.attention.head_count"))
    n_kv = int(gguf.field(f"{arch}.attention.head_count_kv") or n_head)

    def part(name: str) -> Part:
        if name not in gguf.tensors:
            raise SupplyError(f"GGUF {gguf.path.name} has no tensor {name!r}, which the graph needs for {weight}")
        heads = n_head if ".attn_q." in name else n_kv if ".attn_k." in name else None
        return Part(gguf.tensors[name], heads)

    if weight == LM_HEAD:
        return [part("output.weight" if "output.weight" in gguf.tensors else "token_embd.weight")]
    found = _LAYER.fullmatch(weight)
    if found is None:
        return None
    layer, proj = found.group(1), found.group(3)
    names = ["q", "k", "v"] if proj == "qkv" else [proj]
    return [part(f"blk.{layer}.{_GGUF_NAMES[n]}.weight") for n in names]


def _check_same(weight: str, builder: Array, decoded: list[Decoded]) -> None:
    """The builder's float weight [K, N] must be the parts dequantized, or the mapping is wrong."""
    names = [d.part.tensor.name for d in decoded]
    mine = np.concatenate([d.values for d in decoded], axis=0).T
    if mine.shape != builder.shape:
        raise SupplyError(
            f"graph weight {weight} has shape {list(builder.shape)} but GGUF tensors {names} give "
            f"{list(mine.shape)}; the genai builder's layout is not one onnxkit knows"
        )
    scale = max(float(np.abs(mine).max()), 1e-30)
    diff = float(np.abs(builder - mine).max())
    if not diff <= 1e-5 * scale:
        raise SupplyError(
            f"graph weight {weight} differs from GGUF tensors {names} (max |diff| {diff:.3g}, values up "
            f"to {scale:.3g}); the genai builder's layout is not one onnxkit knows"
        )


def _replace_matmul(
    rw: Rewrite, node: onnx.NodeProto, decoded: list[Decoded], compute: Compute
) -> list[tuple[str, Blocks]]:
    """Nodes for one builder MatMul; returns its MatMulNBits (stem, blocks) when it is one group."""
    activation, output = node.input[0], node.output[0]
    base = node.name.rsplit("/", 1)[0] or node.name
    groups: list[list[Decoded]] = []
    for d in decoded:  # consecutive parts sharing a layout become one node (packed Q/K/V of one type)
        if groups and groups[-1][-1].layout == d.layout:
            groups[-1].append(d)
        else:
            groups.append([d])
    outputs, parts = [], []
    for i, group in enumerate(groups):
        name = base if len(groups) == 1 else f"{base}/part{i}"
        out = output if len(groups) == 1 else f"{name}/output_0"
        quantized = [d.blocks for d in group if d.blocks is not None]
        if quantized:
            parts = matmul_nbits(rw, name, activation, concat(quantized), out, compute)
        else:
            weight = rw.init(f"{name}.MatMul.weight", np.concatenate([d.values for d in group]).T)
            rw.nodes.append(helper.make_node("MatMul", [activation, weight], [out], name=f"{name}/MatMul"))
            rw.counts["MatMul float"] += 1
        outputs.append(out)
    if len(groups) > 1:
        rw.nodes.append(helper.make_node("Concat", outputs, [output], name=f"{base}/Concat", axis=-1))
        return []
    return parts


def _fuse_siblings(
    rw: Rewrite, nodes: list[onnx.NodeProto], decoded: list[list[Decoded]], compute: Compute
) -> bool:
    """MatMuls reading one activation (gate and up) as one MatMulNBits and a Split, when they can be.

    Fewer, wider nodes: one kernel call, one block-sum product and one Add instead of one each per
    matrix; every output column is the same sum over K as before. False (nothing added) when a
    part is float or the layouts differ.
    """
    flat = [d for parts in decoded for d in parts]
    if any(d.blocks is None for d in flat) or len({d.layout for d in flat}) != 1:
        return False
    stems = [n.name.rsplit("/", 2) for n in nodes]  # ["/model/layers.0/mlp", "gate_proj", "MatMul"]
    base = f"{stems[0][0]}/{'+'.join(stem[1] for stem in stems)}"
    matmul_nbits(rw, base, nodes[0].input[0], concat([d.blocks for d in flat if d.blocks is not None]),
                  f"{base}/output_0", compute)
    sizes = [sum(d.values.shape[0] for d in parts) for parts in decoded]
    split = rw.init(f"{base}/split", np.array(sizes, np.int64))
    outputs = [n.output[0] for n in nodes]
    rw.nodes.append(helper.make_node("Split", [f"{base}/output_0", split], outputs, name=f"{base}/Split", axis=-1))
    rw.counts["MatMuls fused with a sibling"] += len(nodes)
    return True


def _embedding(rw: Rewrite, node: onnx.NodeProto, embed: Decoded, lm_head: list[tuple[str, Blocks]]) -> str:
    """Nodes for the token-embedding Gather; ``lm_head`` holds the tied lm_head's MatMulNBits to share."""
    ids, output = node.input[1], node.output[0]
    blocks, kind = embed.blocks, embed.part.tensor.type_name
    if blocks is None or blocks.offset is not None:
        # No GatherBlockQuantized form (float tensor, or a min per block): an exact float table.
        table = rw.init("model.embed_tokens.weight", embed.values)
        rw.nodes.append(helper.make_node("Gather", [table, ids], [output], name="/model/embed_tokens/Gather"))
        return f"float table from {kind}"
    base, rows = "/model/embed_tokens", blocks.shape[0]
    if not lm_head:  # its own blocks
        rw.init(f"{base}.weight_Q{blocks.bits}", packed(blocks).reshape(rows, -1))
        rw.init(f"{base}.weight_scales", blocks.scale)
        zps = zero_points(blocks)
        if zps is not None:
            rw.init(f"{base}.weight_zp", zps)
        lm_head = [(base, blocks)]
    # Tied: the very bytes of lm_head's MatMulNBits ([vocab, K/block, bytes] viewed as [vocab, bytes]);
    # two 4-bit halves of 8-bit blocks gather separately and add up exactly.
    shape = rw.init(f"{base}/shape", np.array([rows, -1], np.int64))
    outs = []
    for i, (stem, part) in enumerate(lm_head):
        data, out = f"{base}/Reshape{i}/output_0", output if len(lm_head) == 1 else f"{base}/Gather{i}/output_0"
        rw.nodes.append(
            helper.make_node("Reshape", [f"{stem}.weight_Q{part.bits}", shape], [data], name=f"{base}/Reshape{i}")
        )
        gather(rw, f"{base}/GatherBlockQuantized{i}", data, ids, stem, part, out)
        outs.append(out)
    if len(outs) > 1:
        rw.nodes.append(helper.make_node("Add", outs, [output], name=f"{base}/Add"))
    bits = "+".join(f"{part.bits}" for _, part in lm_head)
    return f"GatherBlockQuantized {bits}-bit from {kind}"


def _embedding_source(node: onnx.NodeProto, producers: dict[str, onnx.NodeProto], inits: set[str]) -> str | None:
    """The float initializer a Gather reads its rows from, directly or through a Transpose (tied lm_head)."""
    data = node.input[0]
    if data in inits:
        return data
    producer = producers.get(data)
    if producer is not None and producer.op_type == "Transpose" and producer.input[0] in inits:
        return producer.input[0]
    return None


def _decoded(gguf: GGUFFile, node: onnx.NodeProto, weights: dict[str, onnx.TensorProto]) -> list[Decoded]:
    """The GGUF parts behind a MatMul's weight, checked against the builder's float values."""
    parts = sources(gguf, node.input[1])
    if parts is None:
        raise SupplyError(
            f"graph weight {node.input[1]} has no GGUF tensor onnxkit knows of; the genai builder's "
            "layout is not the one onnxkit knows"
        )
    decoded = [decode(p) for p in parts]
    _check_same(node.input[1], numpy_helper.to_array(weights[node.input[1]]), decoded)
    return decoded


def carry_blocks(genai_dir: Path, gguf: GGUFFile, plan: Plan | None = None) -> JSON:
    """Rewrite ``genai_dir/model.onnx`` (the builder's fp32 graph of ``gguf``) onto the GGUF's blocks.

    ``plan``: how each weight group is multiplied (None: ``default_plan()``). Returns what was
    done, for the model card.
    """
    plan = default_plan() if plan is None else plan
    path = genai_dir / "model.onnx"
    model = onnx.load(str(path))
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    producers = {out: n for n in graph.node for out in n.output}
    embed_name = "token_embd.weight"
    if embed_name not in gguf.tensors:
        raise SupplyError(f"GGUF {gguf.path.name} has no {embed_name}; expected a Llama-family language model")
    tied = "output.weight" not in gguf.tensors
    rw = Rewrite()
    kept: list[onnx.NodeProto] = []
    embed_gather: onnx.NodeProto | None = None
    lm_head: list[tuple[str, Blocks]] = []
    siblings: dict[str, list[onnx.NodeProto]] = collections.defaultdict(list)
    for node in graph.node:  # layer MatMuls by the activation they read (gate and up share one)
        if node.op_type == "MatMul" and node.input[1] in weights and _LAYER.fullmatch(node.input[1]):
            siblings[node.input[0]].append(node)
    done: set[str] = set()
    for node in graph.node:
        if node.op_type == "Gather" and _embedding_source(node, producers, set(weights)) is not None:
            embed_gather = node
            kept.append(node)  # replaced below, once lm_head's blocks exist
            continue
        if node.op_type != "MatMul" or node.input[1] not in weights:
            kept.append(node)
            continue
        if node.name in done:
            continue
        group = siblings.get(node.input[0], [node])
        decoded = {n.name: _decoded(gguf, n, weights) for n in group}
        computes = {plan.of(n.input[1]) for n in group}
        start = len(rw.nodes)
        if len(group) > 1 and len(computes) == 1 and _fuse_siblings(rw, group, list(decoded.values()), *computes):
            done.update(decoded)
        else:
            made = _replace_matmul(rw, node, decoded[node.name], plan.of(node.input[1]))
            if node.input[1] == LM_HEAD and tied:
                lm_head = made
        kept.extend(rw.nodes[start:])
    if embed_gather is None:
        raise SupplyError(f"{path} has no token-embedding Gather; the genai builder's layout is not one onnxkit knows")
    embed = decode(Part(gguf.tensors[embed_name]))
    source = _embedding_source(embed_gather, producers, set(weights))
    assert source is not None
    table = numpy_helper.to_array(weights[source])
    # A direct table is [vocab, hidden]; a tied one is lm_head's [hidden, vocab] read through a Transpose.
    _check_same(source, table if source == LM_HEAD else table.T, [embed])
    start = len(rw.nodes)
    embedding = _embedding(rw, embed_gather, embed, lm_head)
    at = kept.index(embed_gather)
    kept[at : at + 1] = rw.nodes[start:]
    if any(n.op_type == kernels.OP and n.domain == kernels.DOMAIN for n in rw.nodes):
        kernels.install(genai_dir, model)
    _write(model, kept, rw, path)
    return {
        "compute": plan.card(),
        "embedding": embedding,
        "nodes": dict(sorted(rw.counts.items())),
    }


def _live(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """Nodes whose results are used: drops what fed the replaced weights (the tied table's Transpose)."""
    while True:
        used = outputs | {i for n in nodes for i in n.input}
        live = [n for n in nodes if any(o in used for o in n.output)]
        if len(live) == len(nodes):
            return live
        nodes = live


def _write(model: onnx.ModelProto, nodes: list[onnx.NodeProto], rw: Rewrite, path: Path) -> None:
    graph = model.graph
    nodes = _live(nodes, {o.name for o in graph.output})
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(rw.initializers)
    used = {i for n in nodes for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    data = path.with_name(path.name + ".data")
    path.unlink()
    data.unlink(missing_ok=True)
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name)
