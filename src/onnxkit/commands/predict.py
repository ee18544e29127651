"""``onnxkit predict MODEL --input F``: a file of requests through a model, in-process (serve/predict.py)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING

from onnxkit.errors import OnnxkitError

if TYPE_CHECKING:
    from onnxkit.serve.predict import Summary


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "predict",
        help="run a JSONL file of requests (or a .txt or Parquet of texts) through a model, batched, in this "
             "process or on Ray",
        description="Each input line is a request body as you would POST it to the model's route "
        "(/v1/embeddings, /v1/chat/completions or /v1/completions, /v1/classify, /v1/qa, or KServe v2 "
        "/v2/models/NAME/infer), or an OpenAI Batch API line {custom_id, method, url, body}. A .txt file "
        "holds one text per line, a .parquet file one per row of its 'text' column. Output lines are the "
        "responses, in input order; a line that fails gets its error in place. MODEL is a catalog name, a "
        "folder, an .onnx file, a URL or hf:ORG/NAME (pulled first if missing). An interrupted run with "
        "--output resumes when run again.",
    )
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--input", "-i", type=Path, required=True, metavar="FILE",
                   help=".jsonl of requests, .txt of texts, or .parquet with a 'text' column")
    p.add_argument("--output", "-o", type=Path, default=None, metavar="FILE",
                   help="where the responses go (default or '-': standard output, which cannot resume); "
                        "written as FILE.partial, renamed when the run ends. Run again after an interruption, "
                        "the same command keeps FILE.partial's lines and goes on from there")
    p.add_argument("--restart", action="store_true",
                   help="discard FILE.partial from an interrupted run and start from the first line")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight, merged by the batchers")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: all cores)")
    p.add_argument("--max-batch-size", type=int, default=32,
                   help="rows per onnxruntime run for text models (1: each text alone, so that every line's "
                        "floats depend on that line only)")
    p.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024,
                   help="the longest line (a request body); a longer one is answered 413 in place")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    r = p.add_argument_group("Ray (pip install 'onnxkit[ray]'; docs/scale-out.md)")
    r.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="read the input as a Ray Dataset and run it on a pool of actors; ADDRESS is an existing "
                        "cluster (auto, HOST:PORT or ray://HOST:PORT), none starts a private one on 127.0.0.1")
    r.add_argument("--workers", type=int, default=None,
                   help="actors, each holding the model (default: one per node); --threads each, or the "
                        "cluster's cores shared among them. Their CPUs must be free on the cluster: if not, "
                        "predict stops at once and says what is free")
    r.add_argument("--ray-models", choices=["auto", "object-store", "path"], default="auto",
                   help="how the model reaches other nodes (see onnxkit serve --help)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onnxkit.serve.predict import Interrupted, predict
    from onnxkit.serve.server import resolve_spec
    from onnxkit.settings import ServerSettings

    output: Path | None = None if args.output in (None, Path("-")) else args.output
    if output is None and args.restart:
        raise OnnxkitError("--restart applies to --output FILE; standard output has no partial to resume")
    if args.ray is None and (args.workers is not None or args.ray_models != "auto"):
        raise OnnxkitError("--workers and --ray-models only apply with --ray")
    if args.ray is not None:
        from onnxkit.serve.ray_cluster import check_address

        check_address(args.ray)
    spec = resolve_spec(args.model)
    settings = ServerSettings(threads=args.threads, max_batch_size=args.max_batch_size,
                              max_body_bytes=args.max_body_bytes, access_log=False)

    stop = threading.Event()

    def answer(out: IO[str], skip: int = 0) -> Summary:
        if args.ray is None:
            return predict(spec, args.input, out, settings=settings, concurrency=args.concurrency,
                           progress=not args.quiet, skip=skip, stop=stop)
        from onnxkit.serve.ray_predict import predict_on_ray

        return predict_on_ray(spec, args.input, out, address=None if args.ray == "local" else args.ray,
                              workers=args.workers, settings=settings, concurrency=args.concurrency,
                              progress=not args.quiet, transfer=args.ray_models, skip=skip, stop=stop)

    with _stopped_by_signals(stop):
        if output is None:
            try:
                summary = answer(sys.stdout)
            except (KeyboardInterrupt, Interrupted):
                print(f"\npredict {spec.name}: interrupted", file=sys.stderr)
                return 130
            print(f"predict {spec.name}: {summary.ok} ok, {summary.failed} failed", file=sys.stderr)
            return 0 if summary.failed == 0 else 1
        return _to_file(spec.name, spec.path, output, args, answer)


def _to_file(
    name: str, model: Path, output: Path, args: argparse.Namespace, answer: Callable[[IO[str], int], Summary]
) -> int:
    from onnxkit.serve import predict_partial
    from onnxkit.serve.predict import Interrupted

    out, resumed = predict_partial.open_partial(output, args.input, name, model, restart=args.restart)
    partial = predict_partial.partial_path(output)
    if resumed.lines or resumed.dropped_bytes:
        torn = f"; a torn last line ({resumed.dropped_bytes} bytes) dropped" if resumed.dropped_bytes else ""
        print(f"predict {name}: resuming {partial}: {resumed.lines} answers kept{torn}", file=sys.stderr)
    try:
        with out:
            summary = answer(out, resumed.lines)
    except (KeyboardInterrupt, Interrupted):
        print(f"\npredict {name}: interrupted; {resumed.lines + out.lines} answers are in {partial}: the "
              "same command goes on from there (--restart starts over)", file=sys.stderr)
        return 130
    predict_partial.finish(output)
    ok, failed = resumed.ok + summary.ok, resumed.failed + summary.failed
    kept = f" ({resumed.lines} resumed from {partial.name})" if resumed.lines else ""
    print(f"predict {name}: {ok} ok, {failed} failed{kept} -> {output}", file=sys.stderr)
    return 0 if failed == 0 else 1


@contextlib.contextmanager
def _stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM set ``stop``, which the run reads after each line it writes; a second signal
    stops at once. (A KeyboardInterrupt raised by the first signal could land inside a library's
    callback, where Python ignores it, and the run would go on.)"""
    if threading.current_thread() is not threading.main_thread():  # only there can a signal be handled
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
