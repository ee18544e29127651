"""``onnxkit view FILE [--output FILE.html|.svg|.dot]``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "view",
        help="browse a model's graph with Netron on 127.0.0.1, or write a static rendering",
    )
    p.add_argument("path", type=Path, metavar="FILE")
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help="write a static rendering instead: .html (self-contained SVG), .svg or .dot (Graphviz)",
    )
    p.add_argument("--port", type=int, default=0, help="Netron port on 127.0.0.1 (0: any free one)")
    p.add_argument("--no-browser", action="store_true", help="serve without opening a browser")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onnxkit import view

    path = args.path / "model.onnx" if args.path.is_dir() else args.path
    if args.output is not None:
        print(f"wrote {view.render(path, args.output)}")
        return 0
    host, port = view.serve(path, args.port, browse=not args.no_browser)
    print(f"Netron is serving {path} at http://{host}:{port} (Ctrl-C to stop)")
    view.wait()
    return 0
