"""onnxkit tune: fine-tuning raises held-out accuracy, and the written ONNX matches the tuned module."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from tokenizers import Tokenizer

from onnxkit.cli import main
from onnxkit.pytorch.tune import TuneConfig, tune

DATA = Path(__file__).parent / "data"
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]


def _folder_beside(src: Path, hf: Path, folder: Path, card: dict[str, object]) -> Path:
    folder.mkdir(parents=True)
    for f in src.parent.iterdir():
        shutil.copy2(f, folder / f.name)
    for name in TOKENIZER_FILES:
        shutil.copy2(hf / name, folder / name)
    (folder / "onnxkit.json").write_text(json.dumps(card))
    return folder


@pytest.fixture(scope="session")
def minilm_classifier(minilm_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM with a fresh (random) 3-way classification head: the baseline is chance."""
    from pytorch_models import TEXT_DYNAMIC, TEXT_INPUTS, export, text_args
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "newly initialized weights" is the point here
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForSequenceClassification.from_pretrained(str(minilm_hf), num_labels=3).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            return self.model(input_ids, attention_mask, token_type_ids).logits  # type: ignore[no-any-return]

    root = tmp_path_factory.mktemp("classifier")
    onnx_path = export(
        Logits(),
        text_args(),
        root / "model.onnx",
        TEXT_INPUTS,
        ["logits"],
        {**TEXT_DYNAMIC, "logits": {0: "batch"}},
        dynamo=False,
        opset=17,
    )
    card = {
        "task": "text-classification",
        "source": "all-MiniLM-L6-v2",
        "max_length": 128,
        "id2label": {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"},
        "opset": 17,
    }
    return _folder_beside(onnx_path, minilm_hf, tmp_path_factory.mktemp("clf") / "model", card)


def _rows(name: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def _ort_predict(folder: Path, texts: list[str]) -> np.ndarray:
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(texts)
    feeds = {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }
    logits: np.ndarray = ort.InferenceSession(str(folder / "model.onnx")).run(None, feeds)[0]
    return logits


def test_tuning_raises_held_out_accuracy_and_onnx_matches_module(minilm_classifier: Path, tmp_path: Path) -> None:
    out = tmp_path / "tuned"
    config = TuneConfig(
        task="text-classification",
        data=DATA / "topics_train.jsonl",
        eval_data=DATA / "topics_eval.jsonl",
        epochs=2,
        lr=1e-4,
        batch_size=16,
        progress=False,
    )
    lines: list[str] = []
    result = tune(minilm_classifier, out, config, log=lines.append)

    held_out = _rows("topics_eval.jsonl")
    texts = [r["text"] for r in held_out]
    card = json.loads((out / "onnxkit.json").read_text())
    labels = card["labels"]
    assert labels == ["cooking", "sports", "technology"]
    gold = np.array([labels.index(r["label"]) for r in held_out])
    # Measured independently of tune's own numbers: onnxruntime on the original and the written graph.
    before = float((_ort_predict(minilm_classifier, texts).argmax(-1) == gold).mean())
    after_logits = _ort_predict(out, texts)
    after = float((after_logits.argmax(-1) == gold).mean())
    assert before < 0.6 and after >= 0.85 and after - before >= 0.3, (before, after)
    assert result.before == pytest.approx(before) and result.after[-1] == pytest.approx(after)
    assert result.losses[-1] < result.losses[0]

    # The written ONNX reproduces the tuned module (same tokenization, same inputs).
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(texts)
    feeds = {
        "input_ids": torch.tensor([e.ids for e in enc]),
        "attention_mask": torch.tensor([e.attention_mask for e in enc]),
        "token_type_ids": torch.tensor([e.type_ids for e in enc]),
    }
    with torch.no_grad():
        module_logits = result.module(**feeds).numpy()
    np.testing.assert_allclose(module_logits, after_logits, atol=1e-5, rtol=0)

    assert sorted(p.name for p in out.iterdir()) == sorted(["model.onnx", "onnxkit.json", *TOKENIZER_FILES])
    record = card["fine_tune"]
    assert card["task"] == "text-classification" and card["source"] == "all-MiniLM-L6-v2" and card["max_length"] == 128
    assert record["metric"] == "accuracy" and record["examples"] == 72 and record["eval"][-1] == pytest.approx(after)
    assert any("epoch 2/2: loss" in line and "eval accuracy" in line for line in lines)


@pytest.fixture(scope="session")
def minilm_pooling_folder(
    minilm_onnx: Callable[[str, str, int], Path], minilm_hf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    card = {
        "task": "pooling",
        "source": "all-MiniLM-L6-v2",
        "max_length": 128,
        "pooling": "mean",
        "normalize": True,
        "opset": 18,
    }
    # The dynamo export keeps its weights in external data: tune must keep them external.
    return _folder_beside(
        minilm_onnx("pooling", "dynamo", 18), minilm_hf, tmp_path_factory.mktemp("pool") / "model", card
    )


def test_cli_tunes_pooling_model_that_the_server_can_load(
    minilm_pooling_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tuned-pool"
    code = main(
        [
            "tune",
            str(minilm_pooling_folder / "model.onnx"),
            "--task",
            "pooling",
            "--data",
            str(DATA / "pairs_train.jsonl"),
            "--eval",
            str(DATA / "pairs_eval.jsonl"),
            "--epochs",
            "1",
            "--lr",
            "2e-5",
            "--batch-size",
            "10",
            "-o",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "epoch 1/1: loss" in captured.out and "retrieval_accuracy" in captured.out
    assert "batch" in captured.err  # the progress bar
    names = sorted(p.name for p in out.iterdir())
    assert "model.onnx" in names and "model.onnx.data" in names, names  # external data stayed external
    card = json.loads((out / "onnxkit.json").read_text())
    assert card["task"] == "pooling" and card["pooling"] == "mean" and card["normalize"] is True
    assert card["fine_tune"]["metric"] == "retrieval_accuracy" and len(card["fine_tune"]["loss"]) == 1
    assert card["fine_tune"]["eval"][0] >= 0.75  # MiniLM already retrieves well; one gentle epoch keeps it

    import openai

    from onnxkit.models.folder import model_kind
    from onnxkit.serve.app import ModelSpec
    from onnxkit.serve.server import Server

    assert model_kind(out) == "embeddings"

    with Server([ModelSpec("tuned", out)], port=0) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        reply = client.embeddings.create(model="tuned", input=["How do I poach an egg?"], encoding_format="float")
    served = np.asarray([reply.data[0].embedding], dtype=np.float32)
    original = _pool_ort(minilm_pooling_folder, "How do I poach an egg?")
    tuned = _pool_ort(out, "How do I poach an egg?")
    np.testing.assert_allclose(served[0], tuned, atol=1e-5)
    assert not np.allclose(tuned, original, atol=1e-6)  # the weights did change


def _pool_ort(folder: Path, text: str) -> np.ndarray:
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    e = tok.encode(text)
    feeds = {
        "input_ids": np.array([e.ids], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids], dtype=np.int64),
    }
    out: np.ndarray = ort.InferenceSession(str(folder / "model.onnx")).run(None, feeds)[0][0]
    return out


def test_cli_names_the_bad_line_and_the_wrong_model(
    minilm_pooling_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "a"}\n{"text": "no label"}\n')
    code = main(
        [
            "tune",
            str(minilm_pooling_folder),
            "--task",
            "text-classification",
            "--data",
            str(bad),
            "-o",
            str(tmp_path / "o1"),
        ]
    )
    assert code == 1
    assert (
        f"{bad}:2: task 'text-classification' needs fields ['text', 'label']; got ['text']" in capsys.readouterr().err
    )

    code = main(
        [
            "tune",
            str(minilm_pooling_folder),
            "--task",
            "text-classification",
            "--data",
            str(DATA / "topics_train.jsonl"),
            "-o",
            str(tmp_path / "o2"),
            "--no-progress",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "the model card says task 'pooling': output 'out' holds embeddings, not logits" in err
    assert not (tmp_path / "o2").exists()
