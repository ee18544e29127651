"""``onnxkit inspect FILE|DIR [--json]``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "inspect",
        help="IO, opsets, parameters and op histogram of an ONNX model (weights are not loaded)",
    )
    p.add_argument("path", type=Path, metavar="FILE|DIR")
    p.add_argument("--json", action="store_true", help="machine-readable (schema onnxkit.inspect/1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onnxkit.inspect import format_report, inspect_model

    report = inspect_model(args.path)
    print(json.dumps(report, indent=2, sort_keys=True) if args.json else format_report(report))
    return 0
