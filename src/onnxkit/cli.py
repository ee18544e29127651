"""The ``onnxkit`` command line: a thin dispatcher over one module per subcommand."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from onnxkit.errors import OnnxkitError

# Each module in onnxkit.commands exposes register(subparsers) and sets a `func` default.
COMMANDS = ("serve", "stop", "pull", "models", "predict", "export", "inspect", "view", "tune")


def build_parser() -> argparse.ArgumentParser:
    from onnxkit import __version__

    parser = argparse.ArgumentParser(
        prog="onnxkit",
        description="Export, check, optimise and serve ONNX models.",
    )
    parser.add_argument("--version", action="version", version=f"onnxkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"onnxkit.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except OnnxkitError as exc:
        print(f"onnxkit {args.command}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
