"""Training data for ``onnxkit tune``: JSON lines in, padded token batches out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import Tensor

from onnxkit.errors import InvalidRequest

FIELDS = {"text-classification": ("text", "label"), "pooling": ("anchor", "positive")}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "config.json",
)


def read_jsonl(path: Path, task: str) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file, each checked for the fields ``task`` needs."""
    if not path.is_file():
        raise InvalidRequest(f"data file {str(path)!r} does not exist")
    needed = FIELDS[task]
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or any(k not in row for k in needed):
            got = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise InvalidRequest(f"{path}:{number}: task {task!r} needs fields {list(needed)}; got {got}")
        for key in needed:
            if key != "label" and not isinstance(row[key], str):
                raise InvalidRequest(f"{path}:{number}: field {key!r} must be a string; got {row[key]!r}")
        rows.append(row)
    if not rows:
        raise InvalidRequest(f"data file {str(path)!r} has no rows")
    return rows


@dataclass(frozen=True)
class TextEncoder:
    """Tokenizes a batch of texts into the tensors a BERT-style graph takes, padded to the longest."""

    tokenizer: Tokenizer
    input_names: tuple[str, ...]
    max_length: int

    @classmethod
    def load(cls, folder: Path, input_names: list[str], max_length: int) -> TextEncoder:
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise InvalidRequest(f"no tokenizer.json in {str(folder)!r}: tune needs the model's tokenizer beside it")
        tokenizer = Tokenizer.from_file(str(path))
        known = {"input_ids", "attention_mask", "token_type_ids"}
        unknown = [n for n in input_names if n not in known]
        if unknown or "input_ids" not in input_names:
            raise InvalidRequest(
                f"model inputs {input_names}: tune feeds text models with inputs among {sorted(known)}, "
                "input_ids included"
            )
        tokenizer.enable_truncation(max_length)
        pad = _pad_token(folder, tokenizer)
        tokenizer.enable_padding(pad_id=tokenizer.token_to_id(pad) or 0, pad_token=pad)
        return cls(tokenizer, tuple(input_names), max_length)

    def __call__(self, texts: list[str]) -> tuple[dict[str, Tensor], Tensor]:
        """The model's inputs, and the attention mask (for pooling, whether the model takes it or not)."""
        encodings = self.tokenizer.encode_batch(texts)
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        inputs = {name: torch.tensor(columns[name], dtype=torch.int64) for name in self.input_names}
        return inputs, torch.tensor(columns["attention_mask"], dtype=torch.int64)


def _pad_token(folder: Path, tokenizer: Tokenizer) -> str:
    config = folder / "tokenizer_config.json"
    if config.is_file():
        pad = json.loads(config.read_text()).get("pad_token")
        if isinstance(pad, dict):
            pad = pad.get("content")
        if isinstance(pad, str) and tokenizer.token_to_id(pad) is not None:
            return pad
    for candidate in ("[PAD]", "<pad>", "<|endoftext|>"):
        if tokenizer.token_to_id(candidate) is not None:
            return candidate
    return "[PAD]"


def batches(n: int, size: int, generator: torch.Generator | None) -> list[list[int]]:
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    return [order[i : i + size] for i in range(0, n, size)]
