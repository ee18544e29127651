"""Fine-tune an ONNX text model: import it, train on JSON lines, write the weights back.

text-classification: cross-entropy on the graph's logits for {"text", "label"} rows.
pooling: in-batch contrastive loss on {"anchor", "positive"} pairs (every other positive in the
batch is a negative), measured by retrieval accuracy: the share of anchors whose nearest positive
among all the evaluation pairs is their own.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from onnxkit.errors import InternalError, InvalidRequest
from onnxkit.export.card import CARD, read_card
from onnxkit.pytorch.data import TOKENIZER_FILES, TextEncoder, batches, read_jsonl
from onnxkit.pytorch.module import OnnxModule, load
from onnxkit.pytorch.writeback import save

TASKS = ("text-classification", "pooling")


@dataclass(frozen=True)
class TuneConfig:
    task: str
    data: Path
    eval_data: Path | None = None
    epochs: int = 3
    lr: float = 5e-5
    batch_size: int = 16
    max_length: int | None = None  # None: the card's max_length, else 128
    seed: int = 0
    scale: float = 20.0  # similarity scale (inverse temperature) of the contrastive loss
    progress: bool = True


@dataclass(frozen=True)
class TuneResult:
    out: Path
    module: OnnxModule  # the tuned module, in eval mode
    metric: str | None  # "accuracy" or "retrieval_accuracy"; None without eval data
    before: float | None
    after: list[float] = field(default_factory=list)  # per epoch
    losses: list[float] = field(default_factory=list)  # mean training loss per epoch


def locate(model: Path) -> tuple[Path, Path]:
    """(graph, folder): MODEL is a folder holding model.onnx, or a .onnx file beside its tokenizer."""
    onnx_path = model / "model.onnx" if model.is_dir() else model
    if not onnx_path.is_file() or onnx_path.suffix != ".onnx":
        raise InvalidRequest(f"{str(model)!r} is neither a folder with model.onnx nor a .onnx file")
    return onnx_path, onnx_path.parent


def first_output(out: Tensor | tuple[Tensor, ...]) -> Tensor:
    return out if isinstance(out, Tensor) else out[0]


class Task:
    """The loss and the evaluation of one task over an imported module."""

    def __init__(self, module: OnnxModule, encode: TextEncoder, config: TuneConfig, card: dict[str, Any]) -> None:
        self.module, self.encode, self.config = module, encode, config
        self.pooling = str(card.get("pooling", "mean"))
        self.labels: list[str] = []

    def logits(self, texts: list[str]) -> Tensor:
        inputs, _ = self.encode(texts)
        out = first_output(self.module(**inputs))
        if out.ndim != 2:
            raise InvalidRequest(
                f"model output {self.module.output_names[0]!r} has shape {list(out.shape)}; "
                "text-classification needs logits [batch, labels]: export it with a classification head"
            )
        return out

    def embed(self, texts: list[str]) -> Tensor:
        inputs, mask = self.encode(texts)
        out = first_output(self.module(**inputs))
        if out.ndim == 3:  # token states: pool them the way the card says the server does
            if self.pooling == "cls":
                out = out[:, 0]
            else:
                m = mask.unsqueeze(-1).to(out.dtype)
                out = (out * m).sum(1) / m.sum(1).clamp(min=1e-9)
        if out.ndim != 2:
            raise InvalidRequest(
                f"model output has shape {list(out.shape)}; pooling needs [batch, dim] or [batch, seq, dim]"
            )
        return F.normalize(out, dim=-1)

    def bind_labels(self, card: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        card_task = str(card.get("task", ""))
        if card_task in ("pooling", "embeddings", "default", "feature-extraction"):
            raise InvalidRequest(
                f"the model card says task {card_task!r}: output {self.module.output_names[0]!r} holds "
                "embeddings, not logits; text-classification needs a model with a classification head"
            )
        with torch.no_grad():
            width = self.logits([str(rows[0]["text"])]).shape[1]
        self.labels = label_names(card, [r["label"] for r in rows], width)

    def label_id(self, label: Any) -> int:
        text = str(label)
        if text in self.labels:
            return self.labels.index(text)
        if isinstance(label, int) and 0 <= label < len(self.labels):
            return label
        raise InvalidRequest(f"label {label!r} is not one of the model's labels {self.labels}")

    def loss(self, rows: list[dict[str, Any]]) -> Tensor:
        if self.config.task == "text-classification":
            target = torch.tensor([self.label_id(r["label"]) for r in rows])
            return F.cross_entropy(self.logits([r["text"] for r in rows]), target)
        anchors = self.embed([r["anchor"] for r in rows])
        positives = self.embed([r["positive"] for r in rows])
        scores = anchors @ positives.T * self.config.scale
        return F.cross_entropy(scores, torch.arange(len(rows)))

    @torch.no_grad()
    def evaluate(self, rows: list[dict[str, Any]]) -> float:
        self.module.eval()
        size = self.config.batch_size
        chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
        if self.config.task == "text-classification":
            hits = 0
            for chunk in chunks:
                predicted = self.logits([r["text"] for r in chunk]).argmax(-1).tolist()
                hits += sum(p == self.label_id(r["label"]) for p, r in zip(predicted, chunk, strict=True))
            return hits / len(rows)
        anchors = torch.cat([self.embed([r["anchor"] for r in c]) for c in chunks])
        positives = torch.cat([self.embed([r["positive"] for r in c]) for c in chunks])
        nearest = (anchors @ positives.T).argmax(-1)
        return float((nearest == torch.arange(len(rows))).float().mean())


def label_names(card: dict[str, Any], labels: list[Any], width: int) -> list[str]:
    """The label of each logit: the card's, else the data's own (sorted), else the integers."""
    named = card.get("labels") or [
        v for _, v in sorted((card.get("id2label") or {}).items(), key=lambda kv: int(kv[0]))
    ]
    names = [str(n) for n in named]
    seen = sorted({str(v) for v in labels})
    if names and set(seen) <= set(names):
        return names
    if all(isinstance(v, int) and 0 <= v < width for v in labels):
        return names if len(names) == width else [str(i) for i in range(width)]
    generic = all(n == f"LABEL_{i}" for i, n in enumerate(names))  # transformers' placeholder names
    if (not names or generic) and len(seen) == width:
        return seen
    raise InvalidRequest(
        f"the data has {len(seen)} labels {seen[:10]}; the model gives {width} scores per text, labelled "
        f"{names[:10] or 'nothing'}: use the model's labels, or integer ids below {width}"
    )


def tune(model: Path, out: Path, config: TuneConfig, log: Callable[[str], None] = print) -> TuneResult:
    if config.task not in TASKS:
        raise InvalidRequest(f"task {config.task!r} is not one of {list(TASKS)}")
    if out.exists() and any(out.iterdir()):
        raise InvalidRequest(f"output folder {str(out)!r} exists and is not empty; choose another -o")
    onnx_path, folder = locate(model)
    card = read_card(folder)
    rows = read_jsonl(config.data, config.task)
    eval_rows = read_jsonl(config.eval_data, config.task) if config.eval_data else None
    torch.manual_seed(config.seed)
    started = time.monotonic()
    module = load(onnx_path)
    max_length = int(config.max_length or card.get("max_length") or 128)
    task = Task(module, TextEncoder.load(folder, module.input_names, max_length), config, card)
    if config.task == "text-classification":
        task.bind_labels(card, rows + (eval_rows or []))
    metric = None if eval_rows is None else "accuracy" if config.task == "text-classification" else "retrieval_accuracy"
    before = task.evaluate(eval_rows) if eval_rows else None
    if before is not None:
        log(f"before tuning: eval {metric} {before:.3f}")

    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    steps = config.epochs * -(-len(rows) // config.batch_size)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, 1.0 - s / steps)
    )
    generator = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    after: list[float] = []
    for epoch in range(1, config.epochs + 1):
        module.train()
        total, count = 0.0, 0
        order = batches(len(rows), config.batch_size, generator)
        bar = tqdm(
            order,
            desc=f"epoch {epoch}/{config.epochs}",
            unit="batch",
            file=sys.stderr,
            disable=not config.progress,
        )
        for index in bar:
            loss = task.loss([rows[i] for i in index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            value = float(loss.detach())
            total, count = total + value * len(index), count + len(index)
            bar.set_postfix(loss=f"{value:.4f}")
        losses.append(total / count)
        line = f"epoch {epoch}/{config.epochs}: loss {losses[-1]:.4f}"
        if eval_rows:
            after.append(task.evaluate(eval_rows))
            line += f", eval {metric} {after[-1]:.3f}"
        log(line)

    module.eval()
    record = {
        "task": config.task,
        "base": str(onnx_path),
        "data": str(config.data),
        "examples": len(rows),
        "eval_data": str(config.eval_data) if config.eval_data else None,
        "eval_examples": len(eval_rows) if eval_rows else 0,
        "epochs": config.epochs,
        "lr": config.lr,
        "batch_size": config.batch_size,
        "max_length": max_length,
        "seed": config.seed,
        "loss": [round(v, 6) for v in losses],
        "metric": metric,
        "eval_before": before,
        "eval": after,
        "seconds": round(time.monotonic() - started, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    field_name = "text" if config.task == "text-classification" else "anchor"
    sample, _ = task.encode([str(r[field_name]) for r in rows[:8]])  # for the round-trip check
    new_card = tuned_card(card, config, task.labels, max_length, module, record)
    _write(module, onnx_path, folder, out, new_card, sample)
    diff = new_card["fine_tune"].get("roundtrip_max_abs_diff")
    log(f"wrote {out}" + (f" (onnxruntime vs tuned module: max |diff| {diff:.1e})" if diff is not None else ""))
    return TuneResult(out, module, metric, before, after, losses)


def tuned_card(
    card: dict[str, Any],
    config: TuneConfig,
    labels: list[str],
    max_length: int,
    module: OnnxModule,
    record: dict[str, Any],
) -> dict[str, Any]:
    """The base card with its fields kept; what it lacks filled in; the fine-tune recorded."""
    new = dict(card)
    new.setdefault("task", config.task)
    new.setdefault("source", record["base"])
    new.setdefault("max_length", max_length)
    new.setdefault("opset", module.opset)
    new.setdefault("inputs", [{"name": n} for n in module.input_names])
    new.setdefault("outputs", [{"name": n} for n in module.output_names])
    if config.task == "pooling":
        new.setdefault("pooling", "mean")
        new.setdefault("normalize", True)
    if labels:
        new["labels"] = labels
        new["id2label"] = {str(i): name for i, name in enumerate(labels)}
    if "fine_tune" in card:
        record = {**record, "previous": card["fine_tune"]}
    new["fine_tune"] = record
    return new


def roundtrip(path: Path, module: OnnxModule, inputs: dict[str, Tensor]) -> float | None:
    """How far the written graph, run by onnxruntime, is from the tuned module (None without it)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {name: value.numpy() for name, value in inputs.items()})[0]
    with torch.no_grad():
        ours = first_output(module(**inputs)).numpy()
    return float(np.abs(ours - theirs).max())


def _write(
    module: OnnxModule,
    onnx_path: Path,
    folder: Path,
    out: Path,
    card: dict[str, Any],
    sample: dict[str, Tensor],
) -> None:
    # Built beside OUT and renamed into place: an interrupted run leaves no half-written model.
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        save(module, onnx_path, staging / "model.onnx")
        diff = roundtrip(staging / "model.onnx", module, sample)
        if diff is not None and diff > 1e-4:
            raise InternalError(f"the written model differs from the tuned module by {diff:.2e} (expected < 1e-4)")
        card["fine_tune"]["roundtrip_max_abs_diff"] = diff
        for name in TOKENIZER_FILES:
            if (folder / name).is_file():
                shutil.copy2(folder / name, staging / name)
        (staging / CARD).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        if out.exists():
            out.rmdir()  # checked empty above
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
