"""Smaller and faster graphs: onnxruntime transformer fusions and dynamic int8, gated on accuracy."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxkit.errors import SupplyError
from onnxkit.export.module import run_onnx, session
from onnxkit.export.samples import heldout_texts
from onnxkit.export.tasks import TaskSpec
from onnxkit.export.verify import row_cosines
from onnxkit.types import JSON, Array

MIN_COSINE = 0.99  # mean over the held-out texts
MIN_TEXT_COSINE = 0.95  # the worst single text
MIN_AGREEMENT = 0.99
BATCH = 32
BLOCK = 128  # int8 blocks along K: 32 is a little more accurate (0.9993) but measured slower
RECIPE = f"int8 MatMulNBits (symmetric, blocks of {BLOCK}, accuracy_level 4) + int8 embedding tables"


def _say(message: str) -> None:
    print(f"[onnxkit export] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    # onnxruntime's optimizer and quantizer log advice through the root logger on every call.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def optimize_graph(src: Path, dst: Path, hf_config: JSON, *, attention: bool = True) -> dict[str, int]:
    """onnxruntime.transformers fusions (attention, skip-layer-norm, gelu)."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    # EmbedLayerNormalization becomes QEmbedLayerNormalization under int8, which quantizes the
    # embedding tables too: measured on MiniLM it is no faster on CPU and loses accuracy.
    options.enable_embed_layer_norm = False
    # Attention carries the Q/K/V weights inside one contrib op, which MatMulNBits cannot quantize:
    # before int8 the projections stay MatMuls
    options.enable_attention = attention
    with quiet_root_logger():
        model = optimizer.optimize_model(
            str(src),
            model_type="bert",
            num_heads=int(hf_config.get("num_attention_heads", 0)),
            hidden_size=int(hf_config.get("hidden_size", 0)),
            # 0: only the Python fusions; the session applies onnxruntime's own graph
            # optimizations at load time anyway, and baking them in measured slower
            opt_level=0,
            optimization_options=options,
            use_gpu=False,
        )
        model.save_model_to_file(str(dst))
        stats: dict[str, int] = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
    return stats


def quantize_int8(src: Path, dst: Path) -> None:
    """int8 weights in blocks of 128 along K (MatMulNBits, symmetric), activations quantized per
    block at run time (accuracy_level 4), embedding tables int8.

    Dynamic quantization (the previous recipe) scales each activation tensor as a whole, so one
    outlier token coarsens every other token in the batch; blocks keep the scales local. On
    MiniLM, judged on held-out text (bench/bench_quantize.py): mean cosine 0.9988, worst text 0.997,
    against 0.9931 / 0.985 for dynamic per-channel QInt8, at the same size (22 MB).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(src)), bits=8, block_size=BLOCK, is_symmetric=True, accuracy_level=4
    )
    staged = dst.with_name(dst.stem + ".nbits.onnx")
    try:
        with quiet_root_logger():
            quantizer.process()
            quantizer.model.save_model_to_file(str(staged), False)
            # MatMulNBits quantizes only MatMul weights; the word embedding table is most of a small
            # encoder's size, and int8 rows (one scale per table) cost MiniLM < 0.0005 of cosine
            quantize_dynamic(
                str(staged),
                str(dst),
                op_types_to_quantize=["Gather"],
                weight_type=QuantType.QInt8,
                # fused contrib ops hide value types from shape inference; their outputs are float
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    finally:
        staged.unlink(missing_ok=True)


def text_batches(folder: Path, input_names: list[str], texts: list[str]) -> list[dict[str, Array]]:
    """``texts`` tokenized in length-sorted batches of 32 (how a server batches them)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    ordered = sorted(texts, key=len)
    batches = []
    for i in range(0, len(ordered), BATCH):
        enc = tokenizer(ordered[i : i + BATCH], padding=True, truncation=True, return_tensors="np")
        batches.append({n: np.asarray(enc[n], dtype=np.int64) for n in input_names})
    return batches


def _outputs(path: Path, batches: list[dict[str, Array]]) -> tuple[dict[str, list[Array]], float]:
    sess = session(path)
    run_onnx(sess, batches[0])  # warm-up
    got: dict[str, list[Array]] = {}
    started = time.perf_counter()
    for feeds in batches:
        for name, value in run_onnx(sess, feeds).items():
            got.setdefault(name, []).append(value)
    texts = sum(len(next(iter(feeds.values()))) for feeds in batches)
    return got, texts / (time.perf_counter() - started)


def _accuracy(spec: TaskSpec, ref: dict[str, list[Array]], new: dict[str, list[Array]]) -> JSON:
    """Per text: cosine of the outputs (embedding tasks) or argmax agreement (classifiers)."""
    figures: JSON = {}
    for name in spec.outputs:
        pairs = list(zip(ref[name], new[name], strict=True))
        if spec.name in ("pooling", "default"):
            cosine = np.concatenate([row_cosines(a, b) for a, b in pairs])
            figures[f"{name}_mean_cosine"] = round(float(cosine.mean()), 5)
            figures[f"{name}_min_cosine"] = round(float(cosine.min()), 5)
        else:
            agree = np.concatenate([(np.argmax(a, -1) == np.argmax(b, -1)).ravel() for a, b in pairs])
            figures[f"{name}_argmax_agreement"] = round(float(agree.mean()), 5)
    return figures


def _gate(figures: JSON) -> None:
    for key, value in figures.items():
        floor = {"mean_cosine": MIN_COSINE, "min_cosine": MIN_TEXT_COSINE, "argmax_agreement": MIN_AGREEMENT}.get(
            next((k for k in ("mean_cosine", "min_cosine", "argmax_agreement") if key.endswith(k)), "")
        )
        if floor is not None and not value >= floor:
            raise SupplyError(
                f"quantized/optimized graph is too far from fp32 on {figures['heldout_texts']} held-out texts: "
                f"{key} = {value:.4f} (needs ≥ {floor}); nothing was written. "
                "Export without --quantize, or with --optimize only"
            )


def shrink(model: Path, hf_dir: Path, spec: TaskSpec, *, quantize: str | None, optimize: bool) -> JSON:
    """Replace ``model`` by its optimized and/or int8 version if it stays close to fp32; return figures."""
    folder = model.parent
    fp32 = folder / "model.fp32.onnx"
    os.replace(model, fp32)
    hf_config: dict[str, Any] = json.loads((hf_dir / "config.json").read_text())
    current = fp32
    fused: dict[str, int] = {}
    try:
        if optimize:
            _say("applying onnxruntime transformer fusions")
            fused = optimize_graph(current, folder / "model.opt.onnx", hf_config, attention=quantize != "int8")
            current = folder / "model.opt.onnx"
        if quantize == "int8":
            _say(f"quantizing to {RECIPE}")
            quantize_int8(current, folder / "model.int8.onnx")
            current = folder / "model.int8.onnx"
        inputs = [i.name for i in onnx.load(str(fp32), load_external_data=False).graph.input]
        # judged on held-out texts, not on SENTENCES, which the recipe was developed on: the gate
        # must say how a graph does on text nobody tuned anything on
        texts = heldout_texts()
        batches = text_batches(folder, inputs, texts)
        ref, fp32_speed = _outputs(fp32, batches)
        new, new_speed = _outputs(current, batches)
        figures: JSON = {
            "compared_with": "fp32 onnx",
            "judged_on": "held-out texts (onnxkit/export/data/heldout.txt)",
            "heldout_texts": len(texts),
            **_accuracy(spec, ref, new),
            "bytes_fp32": fp32.stat().st_size,
            "bytes": current.stat().st_size,
            "sentences_per_s_fp32": round(fp32_speed, 1),
            "sentences_per_s": round(new_speed, 1),
            "quantize": quantize,
            "recipe": RECIPE if quantize == "int8" else None,
            "optimize": optimize,
            "fused_ops": fused,
        }
        _say("vs fp32: " + ", ".join(f"{k}={v}" for k, v in figures.items() if k != "fused_ops"))
        _gate(figures)
        os.replace(current, model)
    finally:
        for leftover in (fp32, folder / "model.opt.onnx", folder / "model.int8.onnx"):
            leftover.unlink(missing_ok=True)
    return figures
