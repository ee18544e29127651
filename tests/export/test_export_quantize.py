"""--quantize int8 and --optimize: smaller/faster graphs that stay close to fp32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from transformers import AutoTokenizer

from onnxkit.export import export
from onnxkit.export.samples import heldout_texts

SENTENCES = (Path(__file__).parent / "data" / "sentences.txt").read_text().splitlines()


def _embed(folder: Path, texts: list[str]) -> np.ndarray:
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    out = []
    for i in range(0, len(texts), 32):
        enc = tokenizer(texts[i : i + 32], padding=True, return_tensors="np")
        out.append(sess.run(None, {n: enc[n].astype(np.int64) for n in names})[0])
    return np.concatenate(out)


@pytest.mark.integration
def test_minilm_int8_optimized_stays_within_cosine(
    minilm_dir: Path, minilm_export: Path, tmp_path: Path
) -> None:
    out = export(minilm_dir, "pooling", tmp_path / "int8", quantize="int8", optimize=True)
    card = json.loads((out / "onnxkit.json").read_text())
    figures = card["optimization"]
    assert figures["quantize"] == "int8" and figures["optimize"] is True
    # the gate is judged on held-out text from other sources than the recipe's own samples
    assert figures["heldout_texts"] == len(heldout_texts()) >= 500
    assert figures["embeddings_mean_cosine"] >= 0.99
    assert figures["embeddings_min_cosine"] >= 0.95
    assert figures["bytes"] < figures["bytes_fp32"] / 3
    assert (
        figures["fused_ops"].get("Attention", 0) + figures["fused_ops"].get("SkipLayerNormalization", 0) > 0
    )
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx"), load_external_data=False).graph.node}
    assert ops & {"QAttention", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulNBits"}

    # independent check on sentences the exporter never saw
    ref, got = _embed(minilm_export, SENTENCES), _embed(out, SENTENCES)
    cosine = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert cosine.mean() >= 0.99
    assert cosine.min() >= 0.95


def test_optimize_and_int8_on_tiny_classifier(tiny_bert_dir: Path, tmp_path: Path) -> None:
    out = export(tiny_bert_dir, "text-classification", tmp_path / "out", quantize="int8", optimize=True)
    figures = json.loads((out / "onnxkit.json").read_text())["optimization"]
    assert figures["logits_argmax_agreement"] >= 0.99
    assert figures["judged_on"].startswith("held-out texts") and figures["heldout_texts"] >= 500
    assert figures["recipe"] and figures["sentences_per_s"] > 0
    assert sorted(p.name for p in out.iterdir()) == [
        "model.onnx",
        "onnxkit.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
