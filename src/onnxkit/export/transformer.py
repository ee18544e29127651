"""Hugging Face encoder folders → task graphs (everything but causal-lm), parity-checked with PyTorch."""

from __future__ import annotations

import inspect
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from onnxkit.errors import InvalidRequest, MissingDependency, SupplyError
from onnxkit.export.module import run_onnx, run_torch, session, write_graph
from onnxkit.export.tasks import TASKS as TASKS_WITH_GRAPHS
from onnxkit.export.tasks import TOKEN_INPUTS, TaskGraph, entailment_index, output_axes, spec_for
from onnxkit.export.verify import SAMPLE_TEXTS, assert_close, check_graph, max_diffs, random_token_batch
from onnxkit.types import JSON, Array


def _say(message: str) -> None:
    print(f"[onnxkit export] {message}", file=sys.stderr, flush=True)


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependency("transformers", "export") from exc
    return transformers


@dataclass
class Loaded:
    graph: TaskGraph
    tokenizer: Any
    input_names: tuple[str, ...]
    config: Any
    card: JSON = field(default_factory=dict)


def pooling_mode(hf_dir: Path, requested: str | None) -> str:
    if requested is not None:
        if requested not in ("mean", "cls"):
            raise InvalidRequest(f"pooling {requested!r} is not supported; expected mean or cls")
        return requested
    # sentence-transformers folders say how they were trained to pool
    st = hf_dir / "1_Pooling" / "config.json"
    if st.is_file() and json.loads(st.read_text()).get("pooling_mode_cls_token"):
        return "cls"
    return "mean"


def max_length_of(hf_dir: Path, tokenizer: Any, config: Any) -> int:
    positions = int(getattr(config, "max_position_embeddings", 0) or 0)
    # sentence-transformers truncates at its own max_seq_length (256 for all-MiniLM-L6-v2, whose
    # tokenizer says 512); the embeddings it was trained and evaluated with are the ones to match
    st = hf_dir / "sentence_bert_config.json"
    if st.is_file():
        seq = int(json.loads(st.read_text()).get("max_seq_length") or 0)
        if seq > 0:
            return min(seq, positions) if positions else seq
    declared = int(getattr(tokenizer, "model_max_length", 0) or 0)
    if 0 < declared < 1_000_000:  # transformers uses a huge sentinel for "unknown"
        return min(declared, positions) if positions else declared
    return positions or 512


def load(hf_dir: Path, task: str, pooling: str | None) -> Loaded:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tf = _transformers()
    spec = spec_for(task)
    try:
        tokenizer = tf.AutoTokenizer.from_pretrained(str(hf_dir))
        auto = getattr(tf, spec.auto_class)
        model = auto.from_pretrained(str(hf_dir), attn_implementation="eager").float().eval()
    except (OSError, ValueError, KeyError) as exc:
        raise SupplyError(f"transformers could not load {hf_dir} for task {task!r}: {exc}") from exc
    config = model.config
    accepted = inspect.signature(model.forward).parameters
    names = tuple(n for n in TOKEN_INPUTS if n in accepted)
    produced = set(getattr(tokenizer, "model_input_names", TOKEN_INPUTS))
    if int(getattr(config, "type_vocab_size", 0) or 0) == 0 or "token_type_ids" not in produced:
        # the model then uses its all-zero default, exactly what it sees when served without them
        names = tuple(n for n in names if n != "token_type_ids")
    mode = pooling_mode(hf_dir, pooling)
    card: JSON = {"max_length": max_length_of(hf_dir, tokenizer, config)}
    if getattr(config, "vocab_size", None):
        card["vocab_size"] = int(config.vocab_size)  # the ids the graph embeds: the server checks token ids by it
    if task == "pooling":
        card.update(pooling=mode, normalize=True)
    if spec.name in ("text-classification", "zero-shot-classification", "token-classification"):
        id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
        card["id2label"] = {str(k): v for k, v in sorted(id2label.items())}
        if task == "zero-shot-classification":
            idx = entailment_index(id2label)
            if idx is None:
                raise InvalidRequest(
                    f"zero-shot-classification needs an NLI model whose id2label names 'entailment'; "
                    f"{hf_dir} has labels {sorted(id2label.values())}"
                )
            card["entailment_index"] = idx
    return Loaded(TaskGraph(model, spec, names, mode), tokenizer, names, config, card)


def tokenize(loaded: Loaded, texts: list[str] | tuple[str, ...], max_length: int) -> dict[str, Array]:
    enc = loaded.tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="np"
    )
    return {n: np.asarray(enc[n], dtype=np.int64) for n in loaded.input_names}


def feeds_for_checks(loaded: Loaded) -> list[tuple[str, dict[str, Array]]]:
    vocab = int(loaded.config.vocab_size)
    types = int(getattr(loaded.config, "type_vocab_size", 0) or 0)
    max_len = int(loaded.card["max_length"])
    return [
        ("sample sentences (padded batch)", tokenize(loaded, SAMPLE_TEXTS, max_len)),
        ("one sample sentence", tokenize(loaded, SAMPLE_TEXTS[2:3], max_len)),
        ("random tokens", random_token_batch(loaded.input_names, vocab, 4, min(37, max_len), types, 1)),
    ]


def export_transformer(
    hf_dir: Path,
    out_dir: Path,
    task: str,
    *,
    opset: int,
    atol: float,
    pooling: str | None = None,
    max_length: int | None = None,
) -> JSON:
    """Write model.onnx + tokenizer files into ``out_dir``; return the card fields it learnt."""
    spec = spec_for(task)
    _say(f"loading {hf_dir} for task {task}")
    loaded = load(hf_dir, task, pooling)
    if max_length is not None:
        loaded.card["max_length"] = min(int(loaded.card["max_length"]), max_length)
    example = tokenize(loaded, SAMPLE_TEXTS[:2], int(loaded.card["max_length"]))
    args = tuple(torch.from_numpy(example[n]) for n in loaded.input_names)
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in loaded.input_names}
    axes.update(output_axes(spec))
    target = out_dir / "model.onnx"
    _say(f"tracing to ONNX (opset {opset})")
    write_graph(loaded.graph, args, target, loaded.input_names, spec.outputs, axes, opset)
    _say("checking graph and parity with PyTorch")
    check_graph(target)
    sess = session(target)
    parity: dict[str, float] = {}
    for what, feeds in feeds_for_checks(loaded):
        diffs = max_diffs(run_torch(loaded.graph, feeds, spec.outputs), run_onnx(sess, feeds))
        assert_close(diffs, atol, what)
        for name, d in diffs.items():
            parity[name] = max(parity.get(name, 0.0), d)
    del sess
    # saved with the card's max_length, so truncation=True in any client cuts where the card says
    loaded.tokenizer.model_max_length = int(loaded.card["max_length"])
    loaded.tokenizer.save_pretrained(str(out_dir))
    _say("parity: " + ", ".join(f"{k} max |diff| {v:.2e}" for k, v in parity.items()))
    return {**loaded.card, "parity": {"reference": "pytorch", "atol": atol, "max_abs_diff": parity}}


def reverify(out_dir: Path, hf_dir: Path, *, atol: float = 1e-4) -> dict[str, float]:
    """Re-run the parity gate of an exported folder against its source (raises ParityError)."""
    from onnxkit.export.card import read_card

    card = read_card(out_dir)
    if card.get("task") not in TASKS_WITH_GRAPHS:
        raise InvalidRequest(f"{out_dir} has no onnxkit.json card of an encoder task; cannot re-verify")
    if card.get("fused_tokenizer") or card.get("optimization"):
        raise InvalidRequest(f"{out_dir} is fused/quantized; only plain exports compare with PyTorch")
    loaded = load(hf_dir, str(card["task"]), card.get("pooling"))
    sess = session(out_dir / "model.onnx")
    worst: dict[str, float] = {}
    for what, feeds in feeds_for_checks(loaded):
        diffs = max_diffs(run_torch(loaded.graph, feeds, loaded.graph.spec.outputs), run_onnx(sess, feeds))
        assert_close(diffs, atol, what)
        worst = {k: max(worst.get(k, 0.0), v) for k, v in diffs.items()}
    return worst
