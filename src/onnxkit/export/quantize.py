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
from onnxkit.export.samples import SENTENCES
from onnxkit.export.tasks import TaskSpec
from onnxkit.export.verify import argmax_agreement, mean_cosine
from onnxkit.types import JSON, Array

MIN_COSINE = 0.99
MIN_AGREEMENT = 0.99
BATCH = 32


def _say(message: str) -> None:
    print(f"[onnxkit export] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    # onnxruntime's optimizer and quantizer log advice through the root logger on every call.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def optimize_graph(src: Path, dst: Path, hf_config: JSON) -> dict[str, int]:
    """onnxruntime.transformers fusions (attention, skip-layer-norm, gelu, embed-layer-norm)."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    # EmbedLayerNormalization becomes QEmbedLayerNormalization under int8, which quantizes the
    # embedding tables too: measured on MiniLM it is no faster on CPU and loses accuracy.
    options.enable_embed_layer_norm = False
    with _quiet_root_logger():
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
    """Dynamic int8 with per-channel QInt8 weights: per-tensor loses too much on small encoders
    (MiniLM: mean cosine 0.964 per-tensor vs 0.993 per-channel)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_root_logger():
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            # fused contrib ops hide value types from shape inference; their outputs are float
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def sample_batches(folder: Path, input_names: list[str]) -> list[dict[str, Array]]:
    """Sample sentences tokenized in length-sorted batches of 32 (how a server batches them)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    texts = sorted(SENTENCES, key=len)
    batches = []
    for i in range(0, len(texts), BATCH):
        enc = tokenizer(texts[i : i + BATCH], padding=True, truncation=True, return_tensors="np")
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
    return got, len(SENTENCES) / (time.perf_counter() - started)


def _accuracy(spec: TaskSpec, ref: dict[str, list[Array]], new: dict[str, list[Array]]) -> JSON:
    figures: JSON = {}
    for name in spec.outputs:
        if spec.name in ("pooling", "default"):
            figures[f"{name}_mean_cosine"] = float(
                np.mean([mean_cosine(a, b) for a, b in zip(ref[name], new[name], strict=True)])
            )
        else:
            agree = [argmax_agreement(a, b) for a, b in zip(ref[name], new[name], strict=True)]
            figures[f"{name}_argmax_agreement"] = float(np.mean(agree))
    return figures


def _gate(figures: JSON) -> None:
    for key, value in figures.items():
        if not key.endswith(("cosine", "agreement")):
            continue
        floor = MIN_COSINE if key.endswith("cosine") else MIN_AGREEMENT
        if value < floor:
            raise SupplyError(
                f"quantized/optimized graph is too far from fp32: {key} = {value:.4f} (needs ≥ {floor}); "
                "nothing was written. Export without --quantize, or with --optimize only"
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
            fused = optimize_graph(current, folder / "model.opt.onnx", hf_config)
            current = folder / "model.opt.onnx"
        if quantize == "int8":
            _say("quantizing weights to int8 (dynamic, per-channel)")
            quantize_int8(current, folder / "model.int8.onnx")
            current = folder / "model.int8.onnx"
        inputs = [i.name for i in onnx.load(str(fp32), load_external_data=False).graph.input]
        batches = sample_batches(folder, inputs)
        ref, fp32_speed = _outputs(fp32, batches)
        new, new_speed = _outputs(current, batches)
        figures: JSON = {
            "compared_with": "fp32 onnx",
            "sample_sentences": len(SENTENCES),
            **_accuracy(spec, ref, new),
            "bytes_fp32": fp32.stat().st_size,
            "bytes": current.stat().st_size,
            "sentences_per_s_fp32": round(fp32_speed, 1),
            "sentences_per_s": round(new_speed, 1),
            "quantize": quantize,
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
