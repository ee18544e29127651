"""onnxkit stop [--port P]: stop a server started with --detach (or any onnxkit server on this machine)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("stop", help="stop a running onnxkit server gracefully")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onnxkit.serve.server import stop_server

    print(stop_server(args.port, args.host))
    return 0
