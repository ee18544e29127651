"""Models for the pytorch tests, and how they are exported (both torch.onnx exporters).

A module with a unique name (not conftest) so that tests can import it whichever conftest.py
pytest loaded first.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

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


class Recurrent(nn.Module):
    """Seed 001's inputs through recurrent layers: a 2-layer bidirectional LSTM, then a GRU."""

    def __init__(self, vocab: int = 500, width: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.lstm = nn.LSTM(width + 7, width, num_layers=2, batch_first=True, bidirectional=True)
        self.gru = nn.GRU(2 * width, width, batch_first=True)
        self.head = nn.Linear(width, classes)

    def forward(self, dates: Tensor, input_ids: Tensor, amounts: Tensor) -> Tensor:
        h = torch.cat([self.tokens(input_ids).mean(2), dates, amounts.unsqueeze(-1)], dim=-1)
        h, _ = self.lstm(h)
        _, last = self.gru(h)
        return self.head(last[-1])  # type: ignore[no-any-return]


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


def randomise_batchnorm(model: nn.Module) -> nn.Module:
    # Fresh BatchNorm has mean 0 / var 1: give the stored statistics values that matter.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model
