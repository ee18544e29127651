from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from sentence_transformers import SentenceTransformer
from transformers import AutoTokenizer

from onnxkit.export.pooling import export_pooling

SENTENCES = [
    "A short one.",
    "The train to Edinburgh was delayed by forty minutes because of a signal failure near York.",
    "Cats sleep a lot.",
    "She finished the marathon in just under four hours, despite the heat and a blister on her heel.",
    # longer than 256 tokens: both sides must truncate at the same place
    " ".join(["The committee met again on Thursday to discuss the budget for the coming year."] * 30),
]


@pytest.mark.integration
def test_minilm_pooling_matches_sentence_transformers(minilm_dir: Path, minilm_export: Path) -> None:
    card = json.loads((minilm_export / "onnxkit.json").read_text())
    assert card["task"] == "pooling" and card["pooling"] == "mean" and card["normalize"] is True
    assert [i["name"] for i in card["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert card["outputs"] == [{"name": "embeddings", "dtype": "float32", "shape": ["batch", 384]}]
    assert card["max_length"] == 256  # sentence-transformers' max_seq_length, not the tokenizer's 512

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_export))
    enc = tokenizer(SENTENCES, padding=True, truncation=True, return_tensors="np")
    assert enc["input_ids"].shape[1] == 256
    sess = ort.InferenceSession(str(minilm_export / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = sess.run(["embeddings"], {k: enc[k].astype(np.int64) for k in card_inputs(card)})
    want = SentenceTransformer(str(minilm_dir), device="cpu").encode(SENTENCES, normalize_embeddings=True)
    assert got.shape == (5, 384)
    assert np.abs(got - want).max() < 1e-4


def card_inputs(card: dict[str, list[dict[str, str]]]) -> list[str]:
    return [i["name"] for i in card["inputs"]]


@pytest.mark.integration
def test_export_pooling_writes_only_into_out_dir(minilm_dir: Path, tmp_path: Path) -> None:
    out = export_pooling(minilm_dir, tmp_path / "built", pooling="cls")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["built"]
    assert json.loads((out / "onnxkit.json").read_text())["pooling"] == "cls"
