"""Soak: concurrent clients mixing good and bad requests over every protocol, against a real `onnxkit serve`.

    python bench/bench_soak.py [--minutes 10] [--clients 64] [--chat MODEL] [--embed MODEL]
                               [--classifier DIR] [--warmup-s S] [--rss-limit-mb 8000] [--seed 0]

The server is `python -m onnxkit serve CHAT EMBED [CLASSIFIER] --repository REPO` in its own process on
free ports, gRPC on, the access log off; REPO holds an MLP (16 -> 32 -> 4, dynamic batching) made here.
CHAT and EMBED default to the default models (catalog names); a folder works too, e.g. the tiny models
the tests build. The clients (threads, each with its own openai SDK, httpx and tritonclient.grpc
connections) run the scenarios of soak_traffic.py: OpenAI chat (streamed and not), completions,
embeddings, /v1/classify with --classifier, KServe v2 REST JSON and binary, KServe gRPC, TF-Serving,
and the bad requests of issue 10's classes.

Targets (issue 10): no 5xx (gRPC INTERNAL/UNKNOWN count as one), no dropped connection, no request
left unanswered past the client timeout (a hang), server RSS growth under 5 % from the end of the
warm-up to the end (psutil, the server and its children, sampled each second), and /health p99 under
100 ms, sampled every 100 ms by a separate process (so that the clients' GIL does not time it). The
run stops early, and fails, if the server dies or its RSS passes --rss-limit-mb. Results, with every
5xx, dropped and hung request and what was sent, go to bench/results/soak-<time>.json and the
server's log beside it; the exit status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import multiprocessing as mp
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import psutil
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak_traffic import MLP_IN, MLP_OUT, Client, Outcome, Target, scenarios

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Answered:
    at_s: float  # since the soak started
    seconds: float
    client: int
    previous: str  # this client's request before (same connections)
    outcome: Outcome
TARGETS = {"5xx": 0, "dropped": 0, "timeout": 0, "rss_growth_pct": 5.0, "health_p99_ms": 100.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_repository(root: Path) -> Path:
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((MLP_IN, 32)) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((32, MLP_OUT)) * 0.1).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", MLP_IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", MLP_OUT])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    (root / "mlp" / "1").mkdir(parents=True)
    onnx.save(model, str(root / "mlp" / "1" / "model.onnx"))
    (root / "mlp" / "config.yaml").write_text("max_batch_size: 8\ndynamic_batching:\n  max_queue_delay_ms: 1\n")
    return root


def start_server(models: list[str], repo: Path, log: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    port, grpc_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "onnxkit", "serve", *models, "--repository", str(repo), "--port", str(port),
           "--grpc-port", str(grpc_port), "--no-access-log"]
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 900  # the first load of the default models on a busy machine
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} while starting; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc, port, grpc_port
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the server was not ready within 900 s; see {log}")


def model_names(url: str, classifier: bool) -> Target:
    models = httpx.get(url + "/v1/models", timeout=30).json()["data"]
    by_task: dict[str, str] = {}
    for m in models:
        by_task.setdefault(m.get("task", ""), m["id"])
    cls = by_task.get("text-classification") or by_task.get("zero-shot-classification")
    return Target(url=url, grpc="", chat=by_task["chat"], embed=by_task["embeddings"],
                  classifier=cls if classifier else None)


def probe_health(port: int, stop: Any, out: Any, every_s: float = 0.1) -> None:
    """In its own process: GET /health every ``every_s``, on one kept-alive connection (re-opened on error)."""
    samples: list[tuple[float, float, str]] = []  # (time since start, ms, status or error)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    start = time.monotonic()
    tick = start
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            conn.request("GET", "/health")
            r = conn.getresponse()
            r.read()
            status = str(r.status)
        except (OSError, http.client.HTTPException) as exc:
            status = type(exc).__name__
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        samples.append((time.monotonic() - start, (time.perf_counter() - t0) * 1000, status))
        tick += every_s
        time.sleep(max(0.0, tick - time.monotonic()))
        tick = max(tick, time.monotonic() - every_s)  # a late probe does not queue a burst of catch-ups
    out.put(samples)


def rss_bytes(proc: psutil.Process) -> int:
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return int(total)


def client_loop(index: int, target: Target, seed: int, deadline: float, outcomes: list[Answered],
                lock: threading.Lock, start: float) -> None:
    rng = random.Random(seed)
    client = Client(target, rng)
    table, weights = scenarios(target)
    previous = ""
    try:
        while time.monotonic() < deadline:
            scenario = rng.choices(table, weights)[0]
            t0 = time.monotonic()
            try:
                outcome = scenario(client)
            except Exception as exc:  # a failure of the bench's own client code: reported, never hidden
                outcome = Outcome(scenario.__name__, False, "client-error", None, f"{type(exc).__name__}: {exc}")
            with lock:
                outcomes.append(Answered(t0 - start, time.monotonic() - t0, index, previous, outcome))
            # a dropped connection may be the previous request's doing (the same kept-alive connection)
            previous = f"{outcome.scenario} [{outcome.status}] {outcome.detail[:200]}"
    finally:
        client.close()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--chat", default="smollm2-135m-instruct", help="catalog name or folder")
    p.add_argument("--embed", default="all-minilm-l6-v2", help="catalog name or folder")
    p.add_argument("--classifier", default=None, help="a text-classification export folder (adds /v1/classify)")
    p.add_argument("--warmup-s", type=float, default=None, help="default: a fifth of the run, at most 60 s")
    p.add_argument("--rss-limit-mb", type=float, default=8000, help="stop (and fail) past this server RSS")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    duration = args.minutes * 60
    warmup = args.warmup_s if args.warmup_s is not None else min(60.0, duration / 5)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log = RESULTS / f"soak-{stamp}.server.log"

    with tempfile.TemporaryDirectory(prefix="onnxkit-soak-") as tmp:
        repo = build_repository(Path(tmp) / "models")
        models = [args.chat, args.embed, *([args.classifier] if args.classifier else [])]
        server, port, grpc_port = start_server(models, repo, log)
        try:
            url = f"http://127.0.0.1:{port}"
            target = model_names(url, bool(args.classifier))
            target.grpc = f"127.0.0.1:{grpc_port}"
            print(f"soak: server pid {server.pid} on {url} (gRPC {target.grpc}); chat {target.chat}, embeddings "
                  f"{target.embed}; {args.clients} clients for {duration:.0f} s, warm-up {warmup:.0f} s", flush=True)
            report = soak(server, port, target, args.clients, duration, warmup, args.rss_limit_mb, args.seed)
        finally:
            server.terminate()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
    report["config"] = {"minutes": args.minutes, "clients": args.clients, "models": models, "warmup_s": warmup,
                        "seed": args.seed, "cpus": os.cpu_count(), "loadavg": os.getloadavg(), "server_log": str(log)}
    report["server_log_tracebacks"] = log.read_text(errors="replace").count("Traceback")
    path = RESULTS / f"soak-{stamp}.json"
    path.write_text(json.dumps(report, indent=2))
    print_report(report, path)
    return 0 if all(report["passed"].values()) else 1


def soak(server: subprocess.Popen[bytes], port: int, target: Target, clients: int, duration: float,
         warmup: float, rss_limit_mb: float, seed: int) -> dict[str, Any]:
    proc = psutil.Process(server.pid)
    ctx = mp.get_context("spawn")
    stop, queue = ctx.Event(), ctx.Queue()
    prober = ctx.Process(target=probe_health, args=(port, stop, queue), daemon=True)
    prober.start()
    outcomes: list[Answered] = []
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + duration
    threads = [threading.Thread(target=client_loop, args=(i, target, seed * 1000 + i, deadline, outcomes, lock, start),
                                daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    rss: list[tuple[float, int]] = []
    aborted = None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            aborted = f"the server exited with {server.returncode}"
            break
        try:
            rss.append((time.monotonic() - start, rss_bytes(proc)))
        except psutil.NoSuchProcess:
            continue
        if rss[-1][1] > rss_limit_mb * 2**20:
            aborted = f"server RSS {rss[-1][1] / 2**20:.0f} MiB passed --rss-limit-mb {rss_limit_mb:.0f}"
            server.kill()
            break
        done = len(outcomes)
        if len(rss) % 10 == 1:
            print(f"  {time.monotonic() - start:5.0f} s  {done} answers  RSS {rss[-1][1] / 2**20:.0f} MiB", flush=True)
        time.sleep(1.0)
    for t in threads:  # each finishes the request it is in (bounded by the client timeout)
        t.join(timeout=max(1.0, deadline + 330 - time.monotonic()))
    stop.set()
    health = queue.get(timeout=60)
    prober.join(timeout=10)
    with lock:
        done_outcomes = list(outcomes)
    return summarise(done_outcomes, rss, health, warmup, aborted, sum(t.is_alive() for t in threads))


def summarise(outcomes: list[Answered], rss: list[tuple[float, int]],
              health: list[tuple[float, float, str]], warmup: float, aborted: str | None,
              stuck_clients: int) -> dict[str, Any]:
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    statuses: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    failures: dict[str, list[dict[str, Any]]] = {"5xx": [], "dropped": [], "timeout": [], "client-error": []}
    odd: list[dict[str, Any]] = []  # a good request refused (not 429), or a bad one accepted: worth a look
    for a in outcomes:
        o = a.outcome
        counts[o.scenario][o.kind] += 1
        statuses[o.scenario][str(o.status)] += 1
        entry = {"at_s": round(a.at_s, 1), "seconds": round(a.seconds, 3), "scenario": o.scenario,
                 "status": o.status, "request": o.detail, "client": a.client, "client_before": a.previous}
        if o.kind in failures:
            failures[o.kind].append(entry)
        elif (o.good and o.kind == "4xx" and o.status not in (429, "StatusCode.RESOURCE_EXHAUSTED")) or (
                not o.good and o.kind == "ok" and o.scenario != "bad:client-leaves"):
            odd.append(entry)
    after = [r for t, r in rss if t >= warmup]
    base = statistics.median(after[:10]) if after else float("nan")
    end = statistics.median(after[-10:]) if after else float("nan")
    growth = (end - base) / base * 100 if after else float("nan")
    probes = [(ms, status) for t, ms, status in health if t >= warmup]
    latencies = [ms for ms, _ in probes]
    health_errors = [status for _, status in probes if status != "200"]
    figures = {
        "requests": len(outcomes),
        "5xx": len(failures["5xx"]),
        "dropped": len(failures["dropped"]),
        "timeout": len(failures["timeout"]) + stuck_clients,
        "client_errors": len(failures["client-error"]),
        "rss_mib": {"after_warmup": base / 2**20, "end": end / 2**20,
                    "max": max((r for _, r in rss), default=0) / 2**20},
        "rss_growth_pct": growth,
        "health": {"samples": len(latencies), "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
                   "max_ms": max(latencies, default=float("nan")), "errors": collections.Counter(health_errors)},
        "health_p99_ms": percentile(latencies, 99),
    }
    passed = {
        "no 5xx": figures["5xx"] == 0,
        "no dropped connection": figures["dropped"] == 0,
        "no hung request": figures["timeout"] == 0,
        "RSS growth < 5 %": bool(growth < TARGETS["rss_growth_pct"]),
        "/health p99 < 100 ms": bool(figures["health_p99_ms"] < TARGETS["health_p99_ms"]) and not health_errors,
        "server kept running": aborted is None,
    }
    return {"figures": figures, "passed": passed, "aborted": aborted,
            "per_scenario": {k: dict(v) for k, v in sorted(counts.items())},
            "statuses": {k: dict(v) for k, v in sorted(statuses.items())},
            "failures": failures, "odd": odd[:200], "rss_samples": [(round(t, 1), r) for t, r in rss]}


def print_report(report: dict[str, Any], path: Path) -> None:
    f = report["figures"]
    print(f"requests {f['requests']}: 5xx {f['5xx']}, dropped {f['dropped']}, hung {f['timeout']}, "
          f"bench client errors {f['client_errors']}")
    print(f"server RSS {f['rss_mib']['after_warmup']:.0f} -> {f['rss_mib']['end']:.0f} MiB "
          f"({f['rss_growth_pct']:+.1f} %), max {f['rss_mib']['max']:.0f} MiB")
    h = f["health"]
    print(f"/health p50 {h['p50_ms']:.1f} ms, p99 {h['p99_ms']:.1f} ms, max {h['max_ms']:.1f} ms over {h['samples']} "
          f"probes; errors {dict(h['errors'])}")
    for scenario, kinds in report["per_scenario"].items():
        print(f"  {scenario:28s} {dict(kinds)}  statuses {report['statuses'][scenario]}")
    for kind in ("5xx", "dropped", "timeout", "client-error"):
        seen: collections.Counter[str] = collections.Counter()
        for e in report["failures"][kind]:
            seen[f"{e['scenario']} [{e['status']}] {e['request'][:240]}"] += 1
        for line, n in seen.most_common(30):
            print(f"  {kind} x{n}: {line}")
        for e in report["failures"][kind][:10] if kind == "dropped" else []:
            print(f"    dropped at {e['at_s']} s on client {e['client']}; its request before: {e['client_before']}")
    if report["aborted"]:
        print(f"ABORTED: {report['aborted']}")
    for name, ok in report["passed"].items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    print(f"results: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
