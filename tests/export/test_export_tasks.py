"""Every encoder task on a tiny random BERT: card fields, and outputs re-checked against PyTorch."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import transformers

from onnxkit.errors import InvalidRequest
from onnxkit.export import export

HEADS = {
    "default": "BertModel",
    "pooling": "BertModel",
    "text-classification": "BertForSequenceClassification",
    "zero-shot-classification": "BertForSequenceClassification",
    "question-answering": "BertForQuestionAnswering",
    "token-classification": "BertForTokenClassification",
}
TEXTS = ["The bridge will be closed.", "Thanks!", "Please send the invoice to the accounts team by Friday."]


@pytest.fixture(scope="module")
def head_dirs(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One saved checkpoint per head class, so a fresh load gives the weights the export saw."""
    base = transformers.BertForSequenceClassification.from_pretrained(str(tiny_bert_dir))
    dirs: dict[str, Path] = {}
    for cls_name in sorted(set(HEADS.values())):
        folder = tmp_path_factory.mktemp(cls_name)
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tiny_bert_dir / name, folder / name)
        config = copy.deepcopy(base.config)
        if cls_name == "BertForQuestionAnswering":
            config.num_labels = 2  # start and end
        torch.manual_seed(1)
        model = getattr(transformers, cls_name)(config)
        model.load_state_dict(base.state_dict(), strict=False)
        model.save_pretrained(str(folder))
        dirs[cls_name] = folder
    return {task: dirs[cls] for task, cls in HEADS.items()}


@pytest.fixture(scope="module")
def exported(head_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tasks")
    return {task: export(head_dirs[task], task, root / task) for task in HEADS}


def _reference(folder: Path, task: str, enc: dict[str, torch.Tensor]) -> list[np.ndarray]:
    model = getattr(transformers, HEADS[task]).from_pretrained(str(folder)).eval()
    with torch.no_grad():
        out = model(**enc)
    if task == "default":
        return [out.last_hidden_state.numpy()]
    if task == "pooling":
        mask = enc["attention_mask"].unsqueeze(-1).float()
        mean = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
        return [torch.nn.functional.normalize(mean, dim=-1).numpy()]
    if task == "question-answering":
        return [out.start_logits.numpy(), out.end_logits.numpy()]
    return [out.logits.numpy()]


@pytest.mark.parametrize("task", list(HEADS))
def test_task_outputs_match_pytorch(task: str, head_dirs: dict[str, Path], exported: dict[str, Path]) -> None:
    out = exported[task]
    card = json.loads((out / "onnxkit.json").read_text())
    assert card["task"] == task and card["opset"] == 17 and card["fused_tokenizer"] is False
    assert card["max_length"] == 64
    assert [i["name"] for i in card["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(i["shape"] == ["batch", "sequence"] for i in card["inputs"])
    assert max(card["parity"]["max_abs_diff"].values()) < 1e-4

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {k: v.numpy() for k, v in enc.items()})
    want = _reference(head_dirs[task], task, dict(enc))
    assert [o["name"] for o in card["outputs"]] == [o.name for o in sess.get_outputs()]
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-4)


def test_card_fields_per_task(exported: dict[str, Path]) -> None:
    cards = {t: json.loads((p / "onnxkit.json").read_text()) for t, p in exported.items()}
    assert cards["pooling"]["pooling"] == "mean" and cards["pooling"]["normalize"] is True
    assert cards["pooling"]["outputs"][0]["shape"] == ["batch", 32]
    labels = {"0": "entailment", "1": "neutral", "2": "contradiction"}
    assert cards["text-classification"]["id2label"] == labels
    assert cards["zero-shot-classification"]["entailment_index"] == 0
    assert cards["question-answering"]["outputs"][1]["name"] == "end_logits"
    assert cards["default"]["outputs"][0]["shape"] == ["batch", "sequence", 32]
    assert cards["token-classification"]["outputs"][0]["shape"] == ["batch", "sequence", 3]


def test_zero_shot_needs_an_entailment_label(head_dirs: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "src"
    shutil.copytree(head_dirs["text-classification"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "negative", "1": "neutral", "2": "positive"}
    config["label2id"] = {v: int(k) for k, v in config["id2label"].items()}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidRequest, match="entailment"):
        export(folder, "zero-shot-classification", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_task_and_bad_options(tiny_bert_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="expected one of"):
        export(tiny_bert_dir, "summarization", tmp_path / "a")
    with pytest.raises(InvalidRequest, match="int4 is for causal-lm"):
        export(tiny_bert_dir, "pooling", tmp_path / "b", quantize="int4")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(InvalidRequest, match="not empty"):
        export(tiny_bert_dir, "pooling", tmp_path / "full")
