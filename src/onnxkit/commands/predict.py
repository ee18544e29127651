"""``onnxkit predict MODEL --input F``: a file of requests through a model, in-process (serve/predict.py)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import IO


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "predict",
        help="run a JSONL file of requests (or a .txt of texts) through a model, batched, in this process",
        description="Each input line is a request body as you would POST it to the model's route "
        "(/v1/embeddings, /v1/chat/completions or /v1/completions, /v1/classify, /v1/qa, or KServe v2 "
        "/v2/models/NAME/infer), or an OpenAI Batch API line {custom_id, method, url, body}. A .txt file "
        "holds one text per line. Output lines are the responses, in input order. MODEL is a catalog "
        "name, a folder, an .onnx file, a URL or hf:ORG/NAME (pulled first if missing).",
    )
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--input", "-i", type=Path, required=True, metavar="FILE",
                   help=".jsonl of requests or .txt of texts")
    p.add_argument("--output", "-o", type=Path, default=None, metavar="FILE",
                   help="where the responses go (default: standard output); written as FILE.partial, "
                        "renamed when the run ends")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight, merged by the batchers")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: all cores)")
    p.add_argument("--max-batch-size", type=int, default=32, help="rows per onnxruntime run for text models")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onnxkit.serve.predict import predict
    from onnxkit.serve.server import resolve_spec
    from onnxkit.settings import ServerSettings

    spec = resolve_spec(args.model)
    settings = ServerSettings(threads=args.threads, max_batch_size=args.max_batch_size, access_log=False)
    partial = args.output.with_name(args.output.name + ".partial") if args.output else None
    with contextlib.ExitStack() as stack:
        out: IO[str] = stack.enter_context(partial.open("w", encoding="utf-8")) if partial else sys.stdout
        summary = predict(spec, args.input, out, settings=settings, concurrency=args.concurrency,
                          progress=not args.quiet)
    if partial is not None:
        partial.replace(args.output)
    where = f" -> {args.output}" if args.output else ""
    print(f"predict {spec.name}: {summary.ok} ok, {summary.failed} failed{where}", file=sys.stderr)
    return 0 if summary.failed == 0 else 1
