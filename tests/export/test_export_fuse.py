"""Fused tokenizers: strings in, the same outputs as tokenizer + model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from onnxkit.errors import InvalidRequest
from onnxkit.export import export
from onnxkit.export.fuse import session_options

SENTENCES = (Path(__file__).parent / "data" / "sentences.txt").read_text().splitlines()


def _plain(folder: Path, texts: list[str]) -> list[np.ndarray]:
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    enc = tokenizer(texts, padding=True, truncation=True, return_tensors="np")
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return list(sess.run(None, {n: enc[n].astype(np.int64) for n in names}))


def _fused(folder: Path, texts: list[str]) -> list[np.ndarray]:
    sess = ort.InferenceSession(
        str(folder / "model.onnx"), session_options(), providers=["CPUExecutionProvider"]
    )
    return list(sess.run(None, {"text": np.array(texts, dtype=object)}))


@pytest.mark.integration
def test_minilm_fused_matches_tokenizer_plus_model_on_100_sentences(
    minilm_dir: Path, minilm_export: Path, tmp_path: Path
) -> None:
    assert len(SENTENCES) == 100
    fused = export(minilm_dir, "pooling", tmp_path / "fused", fuse_tokenizer=True)
    card = json.loads((fused / "onnxkit.json").read_text())
    assert card["fused_tokenizer"] is True
    assert card["inputs"] == [{"name": "text", "dtype": "string", "shape": ["batch"]}]
    model = onnx.load(str(fused / "model.onnx"), load_external_data=False)
    assert {o.domain: o.version for o in model.opset_import}["ai.onnx.contrib"] == 1
    worst = 0.0
    for start in range(0, 100, 25):  # batches with real padding
        batch = SENTENCES[start : start + 25]
        (want,) = _plain(minilm_export, batch)
        (got,) = _fused(fused, batch)
        assert got.shape == want.shape == (25, 384)
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst < 1e-5
    # one text at a time gives the same vectors as the batch
    (single,) = _fused(fused, SENTENCES[:1])
    (batched,) = _plain(minilm_export, SENTENCES[:1])
    np.testing.assert_allclose(single, batched, atol=1e-5)

    # Served: KServe v2 takes the strings as BYTES, through Triton's own client.
    import tritonclient.http as httpclient

    from onnxkit.serve.app import ModelSpec
    from onnxkit.serve.server import Server

    with Server([ModelSpec("minilm-fused", fused)], port=0) as server:
        client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        meta = client.get_model_metadata("minilm-fused")
        assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        text = httpclient.InferInput("text", [4], "BYTES")
        text.set_data_from_numpy(np.array(SENTENCES[:4], dtype=object))
        served = client.infer("minilm-fused", [text]).as_numpy(meta["outputs"][0]["name"])
    (direct,) = _fused(fused, SENTENCES[:4])
    np.testing.assert_allclose(served, direct, atol=1e-6)


def test_per_token_task_fuses_with_padding(tiny_bert_dir: Path, tmp_path: Path) -> None:
    plain = export(tiny_bert_dir, "default", tmp_path / "plain")
    fused = export(tiny_bert_dir, "default", tmp_path / "fused", fuse_tokenizer=True)
    texts = ["Thanks!", "Please send the invoice to the accounts team by Friday.", "Hi."]
    (want,) = _plain(plain, texts)
    (got,) = _fused(fused, texts)
    assert got.shape == want.shape and got.shape[:2] == (3, want.shape[1])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_unfusable_tokenizer_says_so(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = tmp_path / "src"
    shutil.copytree(tiny_bert_dir, folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "the", "a", "cat"])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(
        str(folder)
    )
    with pytest.raises(InvalidRequest, match="cannot be fused"):
        export(folder, "pooling", tmp_path / "out", fuse_tokenizer=True)
    assert not (tmp_path / "out").exists()
