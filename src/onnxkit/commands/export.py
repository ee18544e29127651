"""``onnxkit export SOURCE --task TASK -o DIR``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from onnxkit.errors import InvalidRequest

TASKS = (
    "default",
    "pooling",
    "text-classification",
    "zero-shot-classification",
    "question-answering",
    "token-classification",
    "causal-lm",
)


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "export",
        help="convert a model to ONNX, checked for parity against its source",
        description=(
            "SOURCE is a Hugging Face model folder, hf:ORG/NAME, a .gguf file (causal-lm) or a "
            "catalog name (smollm2-135m-instruct, all-minilm-l6-v2). A quantized GGUF keeps its own "
            "blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) exactly unless --requantize int4. "
            "Nothing is written to DIR unless every check passes."
        ),
    )
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("-o", "--output", required=True, type=Path, metavar="DIR")
    p.add_argument("--opset", type=int, default=17, metavar="N")
    p.add_argument("--quantize", choices=("int8", "int4"), default=None, help="not for GGUF sources")
    p.add_argument(
        "--requantize",
        choices=("int4",),
        default=None,
        help="GGUF only: dequantize, then round-to-nearest int4 (moves the model; default keeps the GGUF's blocks)",
    )
    p.add_argument("--optimize", action="store_true", help="onnxruntime transformer fusions")
    p.add_argument("--fuse-tokenizer", action="store_true", help="take strings: tokenizer in the graph")
    p.add_argument("--atol", type=float, default=1e-4, metavar="X", help="parity tolerance (1e-4)")
    p.add_argument("--pooling", choices=("mean", "cls"), default=None, help="pooling task (default mean)")
    p.add_argument("--max-length", type=int, default=None, metavar="N")
    p.add_argument("--json", action="store_true", help="print the model card as JSON when done")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.opset < 13 and args.task != "causal-lm":
        raise InvalidRequest(f"--opset {args.opset} is too old; transformer graphs need opset 13 or later")
    from onnxkit.export.api import export
    from onnxkit.export.card import read_card

    out = export(
        args.source,
        args.task,
        args.output,
        opset=args.opset,
        quantize=args.quantize,
        optimize=args.optimize,
        fuse_tokenizer=args.fuse_tokenizer,
        atol=args.atol,
        pooling=args.pooling,
        max_length=args.max_length,
        requantize=args.requantize,
    )
    card = read_card(out)
    if args.json:
        print(json.dumps(card, indent=2, sort_keys=True))
    else:
        print(f"exported {args.source} ({args.task}) to {out}")
        for key in ("parity", "optimization", "fusion"):
            if key in card:
                print(f"  {key}: {json.dumps(card[key], sort_keys=True)}")
    return 0
