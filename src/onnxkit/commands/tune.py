"""``onnxkit tune MODEL --data F --task T -o OUT``: fine-tune an ONNX model through PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from onnxkit.errors import MissingDependency

TASKS = ("text-classification", "pooling")


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "tune",
        help="fine-tune an ONNX model (imported into PyTorch) and write the weights back",
        description=(
            "Import MODEL (a folder with model.onnx and tokenizer.json, or a .onnx beside its tokenizer) "
            "into PyTorch, train it on JSON lines, and write OUT: model.onnx with the tuned weights, the "
            'tokenizer and an updated onnxkit.json card. text-classification reads {"text", "label"} '
            'lines; pooling reads {"anchor", "positive"} pairs (in-batch contrastive loss).'
        ),
    )
    p.add_argument("model", type=Path, metavar="MODEL")
    p.add_argument("--data", type=Path, required=True, help="training data, JSON lines")
    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument(
        "--eval", type=Path, default=None, dest="eval_data", help="held-out JSON lines, scored each epoch"
    )
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=5e-5, help="AdamW learning rate (default 5e-5)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--max-length", type=int, default=None, help="tokens per text (default: the card's, else 128)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUT", help="folder to write (must not exist)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from onnxkit.pytorch.tune import TuneConfig, tune
    except ModuleNotFoundError as exc:
        if exc.name == "torch":
            raise MissingDependency("torch", "torch") from exc
        raise
    from onnxkit.errors import InvalidRequest

    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        raise InvalidRequest(
            f"--epochs and --batch-size must be at least 1 and --lr positive; got {args.epochs}, "
            f"{args.batch_size}, {args.lr}"
        )
    config = TuneConfig(
        task=args.task,
        data=args.data,
        eval_data=args.eval_data,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=args.seed,
        progress=not args.no_progress,
    )
    tune(args.model, args.output, config)
    return 0
