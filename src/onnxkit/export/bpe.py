"""Byte-level BPE tokenizers (GPT-2, RoBERTa, Llama 3 style) as onnxruntime-extensions' BPE op.

onnxruntime-extensions' own converter (``gen_processing_models``) reads the *slow* tokenizer's
``encoder`` and ``bpe_ranks`` for RoBERTa-style classes; transformers 5 has only the fast ones, so
it fails. This module writes the op's attributes from ``tokenizer.json`` instead, after checking
that every step of that pipeline is one the op reproduces:

* model ``BPE`` without dropout, byte fallback, subword prefix or word suffix;
* no normalizer (the op has none);
* pre-tokenizer ``ByteLevel`` with GPT-2's regex, or a ``Split`` on Llama 3's regex followed by
  ``ByteLevel`` without its own regex (the two regexes the op implements), with or without
  ``add_prefix_space``;
* any post-processor: the special tokens it puts around a text are found by asking the
  tokenizer itself, and added in the graph.

Anything else is refused with the tokenizer class and the step that cannot be expressed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxkit.errors import InvalidRequest

CONTRIB = "ai.onnx.contrib"
# Llama 3's pre-tokenizer regex, which the op applies when its model_name is "Llama"
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PROBE = "probe text"


def _refuse(kind: str, why: str) -> InvalidRequest:
    return InvalidRequest(
        f"tokenizer {kind} cannot be fused by onnxruntime-extensions: {why}; "
        "export without --fuse-tokenizer and tokenize outside the graph"
    )


def _regex_mode(kind: str, pre: dict[str, Any] | None) -> tuple[str, bool]:
    """(op model_name, add_prefix_space) for a byte-level pre-tokenizer, or a refusal."""
    if pre is None:
        raise _refuse(kind, "its BPE has no byte-level pre-tokenizer")
    if pre.get("type") == "ByteLevel":
        if not pre.get("use_regex", True):
            raise _refuse(kind, "its ByteLevel pre-tokenizer splits on no regex, the op always splits")
        return "GPT2", bool(pre.get("add_prefix_space"))
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    if len(steps) == 2 and steps[0].get("type") == "Split" and steps[1].get("type") == "ByteLevel":
        split, level = steps
        regex = split.get("pattern", {}).get("Regex")
        if (
            regex == LLAMA3_REGEX
            and split.get("behavior") == "Isolated"
            and not split.get("invert")
            and not level.get("use_regex", True)
        ):
            return "Llama", bool(level.get("add_prefix_space"))
        raise _refuse(
            kind,
            f"its pre-tokenizer splits on the regex {regex!r}; the op implements only GPT-2's and "
            "Llama 3's byte-level regexes",
        )
    raise _refuse(kind, f"its pre-tokenizer is {_describe(pre)}, not byte-level BPE's")


def _describe(step: dict[str, Any]) -> str:
    if step.get("type") == "Sequence":
        parts = step.get("pretokenizers") or step.get("normalizers") or []
        return "Sequence[" + ", ".join(str(p.get("type")) for p in parts) + "]"
    return str(step.get("type"))


def _specials(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer's post-processor puts before and after a single text."""
    kind = type(tokenizer).__name__
    bare = list(tokenizer(PROBE, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(PROBE)["input_ids"])
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            prefix, suffix = full[:start], full[start + len(bare) :]
            again = list(tokenizer("another " + PROBE)["input_ids"])
            if again[: len(prefix)] == prefix and again[len(again) - len(suffix) :] == suffix:
                return prefix, suffix
    raise _refuse(kind, "its post-processor does not simply add fixed special tokens around the text")


def is_byte_level_bpe(folder: Path) -> bool:
    path = folder / "tokenizer.json"
    if not path.is_file():
        return False
    spec = json.loads(path.read_text(encoding="utf-8"))
    return spec.get("model", {}).get("type") == "BPE" and "ByteLevel" in json.dumps(spec.get("pre_tokenizer"))


def bpe_graph(tokenizer: Any, folder: Path) -> onnx.GraphProto:
    """One text ([1] string) in, its ids (1-D int64, special tokens included) out, as
    ``tokenizer(text)["input_ids"]`` gives them. Raises InvalidRequest naming what cannot be fused."""
    kind = type(tokenizer).__name__
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    model = spec["model"]
    for key, harmless in (("dropout", None), ("continuing_subword_prefix", ""), ("end_of_word_suffix", "")):
        if model.get(key) not in (None, harmless):
            raise _refuse(kind, f"its BPE sets {key}={model[key]!r}, which the op does not implement")
    if model.get("byte_fallback"):
        raise _refuse(kind, "its BPE falls back to <0x..> byte tokens (SentencePiece style), not byte-level")
    if spec.get("normalizer") is not None:
        raise _refuse(kind, f"its normalizer {_describe(spec['normalizer'])} has no equivalent in the op")
    model_name, prefix_space = _regex_mode(kind, spec.get("pre_tokenizer"))
    added = spec.get("added_tokens", [])
    bad = [t["content"] for t in added if "\n" in t["content"] or "=" in t["content"]]
    if bad:
        raise _refuse(kind, f"added tokens {bad} contain '=' or a newline, which the op's token list cannot hold")
    merges = "\n".join(m if isinstance(m, str) else " ".join(m) for m in model["merges"])
    prefix, suffix = _specials(tokenizer)

    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    text = "bpe_text"
    if prefix_space:
        # ByteLevel(add_prefix_space=True) puts a space before a text that does not start with one
        inits += [
            numpy_helper.from_array(np.array([r"^([^ ])"], dtype=object), "bpe_space_pattern"),
            numpy_helper.from_array(np.array([r" \1"], dtype=object), "bpe_space_rewrite"),
        ]
        nodes.append(
            helper.make_node(
                "StringRegexReplace",
                [text, "bpe_space_pattern", "bpe_space_rewrite"],
                ["bpe_spaced"],
                domain=CONTRIB,
                global_replace=0,
            )
        )
        text = "bpe_spaced"
    nodes.append(
        helper.make_node(
            "GPT2Tokenizer",
            [text],
            ["bpe_ids_2d"],
            domain=CONTRIB,
            vocab=json.dumps(model["vocab"], separators=(",", ":")),
            merges=merges,
            added_token="\n".join(f"{t['content']}={t['id']}" for t in added),
            padding_length=-1,
            model_name=model_name,
        )
    )
    inits += [
        helper.make_tensor("bpe_axis0", TensorProto.INT64, [1], [0]),
        helper.make_tensor("bpe_prefix", TensorProto.INT64, [len(prefix)], prefix),
        helper.make_tensor("bpe_suffix", TensorProto.INT64, [len(suffix)], suffix),
    ]
    ids = "bpe_ids_2d"
    if model_name == "Llama":
        # with model_name "Llama" the op always adds its own BOS and EOS (GPT-2's <|endoftext|>);
        # they are cut here and the tokenizer's own special tokens added below
        inits += [
            helper.make_tensor("bpe_one", TensorProto.INT64, [1], [1]),
            helper.make_tensor("bpe_minus_one", TensorProto.INT64, [1], [-1]),
        ]
        nodes.append(helper.make_node("Slice", [ids, "bpe_one", "bpe_minus_one", "bpe_one"], ["bpe_inner"]))
        ids = "bpe_inner"
    nodes += [
        helper.make_node("Squeeze", [ids, "bpe_axis0"], ["bpe_ids"]),
        helper.make_node("Concat", ["bpe_prefix", "bpe_ids", "bpe_suffix"], ["input_ids"], axis=0),
    ]
    for i, node in enumerate(nodes):
        node.name = f"bpe_{i}_{node.op_type}"  # onnxruntime refuses two nodes with one name
    return helper.make_graph(
        nodes,
        f"{kind}_bpe",
        [helper.make_tensor_value_info("bpe_text", TensorProto.STRING, [1])],
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["tokens"])],
        inits,
    )
