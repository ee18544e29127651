"""What onnxruntime's CPU kernels allow a GGUF build: MatMulNBits per accuracy level, at decode.

    .venv/bin/python bench/bench_gguf_kernels.py [MODEL ...] [--threads 2] [--seconds 1]

For each MODEL (a genai folder or a catalog name, pulled if missing, as `onnxkit serve` takes them;
default: the catalog's smollm2-135m-instruct, the exact build), every distinct
MatMulNBits of its graph (K, N, bits, block length, zero points or not) runs alone in an onnxruntime
session on one row of float32 activations (single-stream decode), at each accuracy_level 0 to 4,
on random codes of the same shape. Each time is the median of repeated runs minus the median of an
empty session's run (the Python call's own cost). The per-token sum weighs each node by how often
the graph holds it.

What it shows on this machine (AMD EPYC, AVX-512 VNNI, 2 threads): levels 0 to 3 take the same
float32 kernel, and level 4 (int8 activations) is the only one faster. So float32 activations,
which issue 11's greedy parity needs, cost the layer matrices the same at every level below 4.
Results print as a table and land in bench/results/bench_gguf_kernels.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from onnxkit.serve.server import resolve_spec  # noqa: E402

Shape = tuple[int, int, int, int, bool]  # K, N, bits, block_size, zero points given


def shapes(model_dir: Path) -> collections.Counter[Shape]:
    graph = onnx.load(str(model_dir / "model.onnx"), load_external_data=False).graph
    found: collections.Counter[Shape] = collections.Counter()
    for node in graph.node:
        if node.op_type == "MatMulNBits":
            a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
            zero_points = len(node.input) > 3 and bool(node.input[3])
            found[(int(a["K"]), int(a["N"]), int(a["bits"]), int(a["block_size"]), zero_points)] += 1
    return found


def session(graph: onnx.GraphProto, threads: int) -> ort.InferenceSession:
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 9
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def matmul(shape: Shape, level: int, threads: int) -> ort.InferenceSession:
    k, n, bits, block, zero_points = shape
    rng = np.random.default_rng(0)
    blocks = (k + block - 1) // block
    inits = [numpy_helper.from_array(rng.integers(0, 256, (n, blocks, block * bits // 8), dtype=np.uint8), "B"),
             numpy_helper.from_array((rng.random(n * blocks, dtype=np.float32) * 0.01), "S")]
    inputs = ["A", "B", "S"]
    if zero_points:
        packed = (blocks * bits + 7) // 8
        inits.append(numpy_helper.from_array(rng.integers(0, 256, (n * packed,), dtype=np.uint8), "Z"))
        inputs.append("Z")
    node = helper.make_node("MatMulNBits", inputs, ["Y"], domain="com.microsoft", K=k, N=n, bits=bits,
                            block_size=block, accuracy_level=level)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, n])], inits)
    return session(graph, threads)


def empty(threads: int) -> ort.InferenceSession:
    node = helper.make_node("Identity", ["A"], ["Y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, 576])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 576])])
    return session(graph, threads)


def median_us(sess: ort.InferenceSession, k: int, seconds: float) -> float:
    feed = {"A": np.random.default_rng(1).standard_normal((1, k), dtype=np.float32)}
    for _ in range(20):
        sess.run(None, feed)
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 20:
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=["smollm2-135m-instruct"], metavar="MODEL")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.0, help="timing per node and level")
    args = ap.parse_args()
    call = median_us(empty(args.threads), 576, args.seconds)
    print(f"an empty session's run: {call:.1f} us (subtracted)")
    results: dict[str, Any] = {"call_us": call, "threads": args.threads, "models": {}}
    for spec in args.models:
        folder = resolve_spec(spec).path
        found = shapes(folder)
        per_token = {level: 0.0 for level in range(5)}
        rows = []
        for shape, count in sorted(found.items()):
            k, n, bits, block, zero_points = shape
            us = {level: max(median_us(matmul(shape, level, args.threads), k, args.seconds) - call, 0.0)
                  for level in range(5)}
            for level, value in us.items():
                per_token[level] += count * value
            rows.append({"K": k, "N": n, "bits": bits, "block": block, "zero_points": zero_points,
                         "count": count, "us": us})
            cells = "  ".join(f"{us[level]:8.1f}" for level in range(5))
            print(f"{folder.name}: {count:3d} x K={k:<5d} N={n:<6d} {bits}-bit block {block:<3d}"
                  f"{' zp' if zero_points else '   '}  us at level 0..4: {cells}")
        cells = "  ".join(f"{per_token[level] / 1000:8.2f}" for level in range(5))
        print(f"{folder.name}: MatMulNBits per token, ms at level 0..4: {cells}")
        results["models"][str(folder)] = {"nodes": rows, "per_token_ms": {k: v / 1000 for k, v in per_token.items()}}
    out = ROOT / "bench" / "results" / "bench_gguf_kernels.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
