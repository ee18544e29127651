"""onnxkit serve [MODEL ...]: the OpenAI-compatible server (and, with a repository, KServe/TF-Serving)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from onnxkit.errors import InvalidRequest, OnnxkitError
from onnxkit.settings import DEFAULT_MODELS, MIN_TRANSFER_RATE, Limits, ServerSettings

if TYPE_CHECKING:
    from onnxkit.serve.app import ModelSpec
    from onnxkit.serve.ray_serve import Scaling
    from onnxkit.serve.state import AppState


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="serve models over the OpenAI API (and KServe v2 / TF-Serving)",
        description="Serve models. With no MODEL, serves the default chat and embedding models. "
        "A MODEL is a catalog name, a folder, an .onnx file, an http(s) URL or hf:ORG/NAME; "
        "missing ones are pulled first.",
    )
    p.add_argument("models", nargs="*", metavar="MODEL")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080,
                   help="0: any free port, named by the line printed at start (not with --detach or --ray)")
    p.add_argument("--api-key", default=os.environ.get("ONNXKIT_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (env ONNXKIT_API_KEY)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads per model (0: all cores)")
    p.add_argument("--max-batch-size", type=int, default=32, help="embedding rows per forward pass")
    p.add_argument("--max-batch-delay-ms", type=float, default=5.0, help="how long the batcher waits to merge")
    p.add_argument("--max-concurrent-sequences", type=int, default=8,
                   help="chat sequences decoded together where the model batches dynamically (paged "
                        "attention); onnxruntime-genai's static CPU batches hold at most 4")
    p.add_argument("--chat-gather-ms", type=float, default=10.0,
                   help="an idle chat engine waits while requests keep arriving this close together "
                        "(30 ms at most) so that a burst shares one batch; 0 starts at once")
    p.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024)
    p.add_argument("--request-timeout", type=float, default=20.0, metavar="S",
                   help=f"a request's headers must arrive within S seconds, and its body within S plus 1 s "
                        f"per {MIN_TRANSFER_RATE} bytes; slower clients get 408 and are disconnected, and so is "
                        "a client taking its response slower than that")
    p.add_argument("--limit", action="append", default=[], metavar="NAME=N",
                   help="raise or lower a per-request bound (repeatable); " + ", ".join(
                       f"{f}={getattr(Limits(), f)}" for f in Limits.names()) + " (docs/limits.md)")
    p.add_argument("--default-chat-model", metavar="NAME",
                   help="the chat model a request without \"model\" gets, where several are served")
    p.add_argument("--default-embeddings-model", metavar="NAME",
                   help="the embeddings model a request without \"model\" gets, where several are served")
    p.add_argument("--detach", action="store_true",
                   help="start in the background and return once ready; no-op if already running")
    t = p.add_argument_group("tensor serving (KServe v2 REST/gRPC, TF-Serving REST)")
    t.add_argument("--repository", action="append", default=[], metavar="DIR",
                   help="Triton-layout repository: DIR/<model>/[config.yaml]/<version>/model.onnx")
    t.add_argument("--config", action="append", default=[], metavar="FILE",
                   help='JSON/YAML {"model_config_list": [{"name", "base_path", "max_batch_size", ...}]}')
    t.add_argument("--model-control", choices=["none", "poll", "explicit"], default="none",
                   help="poll: follow the repository; explicit: load/unload through the repository API")
    t.add_argument("--repository-poll-secs", type=float, default=5.0, help="how often poll mode looks")
    t.add_argument("--load-model", action="append", default=[], metavar="NAME",
                   help="explicit mode: models to load at start ('*': all; default all)")
    t.add_argument("--grpc-port", type=int, default=None,
                   help="KServe v2 gRPC port (default 8001 with --repository/--config, else off; -1: off). With "
                        "--ray: off unless given, then served by Ray Serve's gRPC proxy, which listens on every "
                        "interface")
    r = p.add_argument_group("Ray (pip install 'onnxkit[ray]'; docs/scale-out.md)")
    r.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run as a Ray Serve deployment behind Ray's HTTP proxy (on --host/--port); ADDRESS is "
                        "an existing cluster (auto, HOST:PORT or ray://HOST:PORT), none starts a private one on "
                        "127.0.0.1. KServe v2 gRPC with --grpc-port, through Ray Serve's gRPC proxy "
                        "(tritonclient works unchanged)")
    r.add_argument("--replicas", default="1", metavar="N|auto",
                   help="replicas, each loading the models once; auto scales on ongoing requests")
    r.add_argument("--max-replicas", type=int, default=None, metavar="M",
                   help="with --replicas auto: the most replicas")
    r.add_argument("--target-ongoing-requests", type=float, default=8.0, metavar="N",
                   help="with --replicas auto: requests in flight per replica that Ray scales towards")
    r.add_argument("--ray-models", choices=["auto", "object-store", "path"], default="auto",
                   help="how model files reach other nodes: auto uses the same path when a node has the same "
                        "files there, else a copy through Ray's object store")
    p.add_argument("--log-json", action="store_true", help="access log lines as JSON")
    p.add_argument("--no-access-log", action="store_true", help="no line per request")
    p.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> ServerSettings:
    try:  # a wrong --limit, and ServerSettings' own checks
        return ServerSettings(
            limits=Limits().with_values(args.limit),
            host=args.host,
            port=args.port,
            api_key=args.api_key or None,
            threads=args.threads,
            max_batch_size=args.max_batch_size,
            max_batch_delay_ms=args.max_batch_delay_ms,
            max_concurrent_sequences=args.max_concurrent_sequences,
            chat_gather_ms=args.chat_gather_ms,
            max_body_bytes=args.max_body_bytes,
            request_timeout_s=args.request_timeout,
            repositories=tuple(args.repository),
            model_config_files=tuple(args.config),
            model_control=args.model_control,
            repository_poll_seconds=args.repository_poll_secs,
            load_models=tuple(args.load_model) or ("*",),
            grpc_port=grpc_port(args),
            log_json=args.log_json,
            access_log=not args.no_access_log,
            default_chat_model=args.default_chat_model,
            default_embeddings_model=args.default_embeddings_model,
        )
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc


def grpc_port(args: argparse.Namespace) -> int | None:
    if args.grpc_port is not None:
        return None if args.grpc_port < 0 else int(args.grpc_port)
    # On Ray, gRPC only when asked for: Ray's gRPC proxy listens on every interface, whatever --host says.
    return 8001 if (args.repository or args.config) and args.ray is None else None


def run(args: argparse.Namespace) -> int:
    from onnxkit.serve import server

    settings = settings_from(args)
    scaling = check_ray_flags(args)
    if settings.port == 0 and (args.detach or scaling is not None):
        needs = "--detach waits for the server on its port" if args.detach else "Ray's proxy listens on a given port"
        raise OnnxkitError(f"--port 0 (any free port) is for a foreground server without --ray: {needs}; give a port")
    tensor_serving = bool(args.repository or args.config)
    specs = args.models or ([] if tensor_serving else list(DEFAULT_MODELS))
    running = server.probe(settings.host, settings.port) if settings.port else None
    if running:
        print(f"an onnxkit server is already running on {settings.host}:{settings.port} "
              f"(pid {running.get('pid')}); nothing to do")
        return 0
    # Pull what is missing in the foreground, so progress shows and errors surface here.
    models = [server.resolve_spec(s) for s in specs]
    if args.detach:
        argv = sys.argv[1:] if sys.argv[1:2] == ["serve"] else ["serve", *specs]
        if scaling is not None:  # wait for Ray's proxy where this machine reaches it
            from onnxkit.serve.ray_cluster import probe_host

            address = None if args.ray == "local" else args.ray
            return detach(replace(settings, host=probe_host(settings.host, address)), argv)
        return detach(settings, argv)
    if scaling is not None:
        server.write_pidfile(settings)
        return serve_on_ray(args, settings, models, scaling)
    # Bound here, so that the line below (and the pid file) name the port, --port 0's free one too.
    try:
        sock = server.bind(settings.host, settings.port)
    except OSError as exc:
        raise OnnxkitError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from exc
    settings = replace(settings, port=int(sock.getsockname()[1]))
    server.write_pidfile(settings)
    from onnxkit.runtime.memory import tune_malloc
    from onnxkit.serve.connections import raise_open_files_limit

    tune_malloc()  # before the server starts its threads: their arenas are capped too
    raise_open_files_limit()  # a connection is a file descriptor
    what = [m.name for m in models] + [f"repository {r}" for r in (*args.repository, *args.config)]
    grpc = "" if settings.grpc_port is None else (
        f" and gRPC on {settings.host}:{settings.grpc_port}" if settings.grpc_port else " and gRPC on a free port")
    url = f"http://{settings.host}:{settings.port}"
    print(f"serving {', '.join(what)} on {url}{grpc}; the web page: {url}/ui", flush=True)
    try:
        server.serve_forever(settings, models, sock, ready=lambda state: print(ready_line(state, url), flush=True))
    finally:
        server.pidfile(settings.port).unlink(missing_ok=True)
    return 0


def ready_line(state: AppState, url: str) -> str:
    """The line printed once start-up completes: the models' health, and where gRPC listens (with
    --grpc-port 0, the start line could not name that port yet)."""
    status, failed = state.health()
    grpc = f" and gRPC on {state.settings.host}:{state.grpc_port}" if state.grpc_port else ""
    if status == "ok":
        return f"ready on {url}{grpc}"
    reasons = "; ".join(f"{name}: {reason}" for name, reason in failed.items())
    return f"started on {url}{grpc}, but not ready ({reasons or status}); see {url}/health"


def serve_on_ray(args: argparse.Namespace, settings: ServerSettings, models: list[ModelSpec], scaling: Scaling) -> int:
    from onnxkit.serve import server
    from onnxkit.serve.ray_driver import serve_on_ray

    try:
        serve_on_ray(settings, models, scaling, address=None if args.ray == "local" else args.ray,
                     transfer=args.ray_models, ready=lambda line: print(line, flush=True))
    finally:
        server.pidfile(settings.port).unlink(missing_ok=True)
    return 0


def check_ray_flags(args: argparse.Namespace) -> Scaling | None:
    """The Ray flags, checked before any model is pulled; None without --ray (then none may be given)."""
    if args.ray is None:
        given = [flag for flag, value, default in (
            ("--replicas", args.replicas, "1"), ("--max-replicas", args.max_replicas, None),
            ("--target-ongoing-requests", args.target_ongoing_requests, 8.0), ("--ray-models", args.ray_models, "auto"),
        ) if value != default]
        if given:
            raise OnnxkitError(f"{', '.join(given)} only apply with --ray")
        return None
    from onnxkit.serve.ray_cluster import check_address

    check_address(args.ray)
    return scaling_from(args)


def scaling_from(args: argparse.Namespace) -> Scaling:
    from onnxkit.serve.ray_serve import Scaling

    if args.replicas == "auto":
        if not args.max_replicas or args.max_replicas < 1:
            raise OnnxkitError("--replicas auto needs --max-replicas M (M >= 1): the most replicas Ray may start")
        return Scaling(replicas=None, max_replicas=args.max_replicas,
                       target_ongoing_requests=args.target_ongoing_requests)
    if not args.replicas.isdigit() or int(args.replicas) < 1:
        raise OnnxkitError(f"--replicas {args.replicas!r}: expected a whole number >= 1 or 'auto'")
    if args.max_replicas is not None:
        raise OnnxkitError("--max-replicas goes with --replicas auto; a fixed --replicas N needs none")
    return Scaling(replicas=int(args.replicas), max_replicas=int(args.replicas))


def detach(settings: ServerSettings, argv: list[str]) -> int:
    from onnxkit.serve import server

    child_args = [a for a in argv if a != "--detach"]
    log = server.run_dir() / f"server-{settings.port}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "onnxkit", *child_args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        info = server.probe(settings.host, settings.port)
        if info and info.get("status") == "unavailable":
            proc.terminate()
            proc.wait(timeout=30)
            reasons = "; ".join(f"{k}: {v}" for k, v in info.get("unavailable", {}).items())
            raise OnnxkitError(f"the server started but a model failed to load ({reasons}); stopped it")
        if info and info.get("status") == "ok":
            print(f"onnxkit server ready on http://{settings.host}:{settings.port} (pid {proc.pid}); "
                  f"log: {log}; stop it with: onnxkit stop --port {settings.port}")
            return 0
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise OnnxkitError(f"the server exited with code {proc.returncode} during start-up:\n{tail}")
        time.sleep(0.2)
    proc.terminate()
    raise OnnxkitError(f"the server was not ready after 300 s; see {log}")
