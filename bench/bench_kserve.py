"""KServe v2 REST overhead and dynamic batching, measured against raw onnxruntime in the same run.

    python bench/bench_kserve.py [--requests 2000] [--seconds 5] [--clients 16]

Model: an MLP 784-512-10 (random weights) served from a Triton-layout repository.
The server runs in its own process (a client in the same process would share its
GIL). Targets: JSON p50 <= raw p50 + 1.0 ms; binary p50 <= raw p50 + 0.5 ms;
16 clients with dynamic batching >= 3x one client's throughput.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def build_mlp(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((784, 512)) * 0.05).astype(np.float32)
    b1 = np.zeros(512, np.float32)
    w2 = (rng.standard_normal((512, 10)) * 0.05).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "w1"], ["h"]),
            helper.make_node("Add", ["h", "b1"], ["hb"]),
            helper.make_node("Relu", ["hb"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["logits"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 784])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def repository(root: Path, threads: int, delay_ms: float) -> Path:
    # Two configs of one model, as a Triton user would: no queue delay for latency, a short one
    # for throughput (the batcher then waits for companions instead of running each request alone).
    for name, delay in (("mlp", 0.0), ("mlp_batched", delay_ms)):
        build_mlp(root / name / "1" / "model.onnx")
        (root / name / "config.yaml").write_text(
            f"max_batch_size: 32\ndynamic_batching:\n  max_queue_delay_ms: {delay}\nthreads: {threads}\n"
        )
    return root


def serve(root: str, port: int, ready: mp.synchronize.Event) -> None:
    from onnxkit.serve.server import Server

    # The access log stays on (its cost is part of serving) but goes to /dev/null, not a terminal.
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    with Server([], port=port, repositories=(root,)):
        ready.set()
        while True:
            time.sleep(3600)


def raw_p50(path: Path, threads: int, n: int) -> float:
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((1, 784)).astype(np.float32)
    for _ in range(200):
        sess.run(None, {"input": x})
    times = []
    for _ in range(n):
        t = time.perf_counter()
        sess.run(None, {"input": x})
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def json_body(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    body = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]
    }
    return json.dumps(body).encode(), {"Content-Type": "application/json"}


def binary_body(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    raw = x.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": list(x.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return header + raw, {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }


def connect(port: int) -> http.client.HTTPConnection:
    # http.client sends headers and body in two writes; without TCP_NODELAY, Nagle plus delayed
    # ACKs add ~40 ms (urllib3 and tritonclient set it too).
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def latencies(port: int, body: bytes, headers: dict[str, str], n: int, model: str = "mlp") -> list[float]:
    conn = connect(port)
    out = []
    for i in range(n + 100):
        t = time.perf_counter()
        conn.request("POST", f"/v2/models/{model}/infer", body, headers)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit(f"HTTP {r.status}")
        if i >= 100:  # warm-up
            out.append(time.perf_counter() - t)
    conn.close()
    return out


def throughput(
    port: int, body: bytes, headers: dict[str, str], clients: int, seconds: float, model: str = "mlp"
) -> float:
    counts = [0] * clients
    stop = time.perf_counter() + seconds

    def client(i: int) -> None:
        conn = connect(port)
        while time.perf_counter() < stop:
            conn.request("POST", f"/v2/models/{model}/infer", body, headers)
            r = conn.getresponse()
            r.read()
            counts[i] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def batch_sizes(port: int, model: str) -> tuple[float, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith(f'onnxkit_batch_size_count{{model="{model}"'):
            count = float(line.split()[-1])
        if line.startswith(f'onnxkit_batch_size_sum{{model="{model}"'):
            total = float(line.split()[-1])
    return count, total


def http_parser() -> str:
    import importlib.util

    return (
        "httptools"
        if importlib.util.find_spec("httptools")
        else "h11 (pip install httptools for ~0.1 ms less)"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (raw and served)")
    ap.add_argument("--delay-ms", type=float, default=1.0, help="max_queue_delay_ms of the throughput model")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = repository(Path(tmp), args.threads, args.delay_ms)
        model = root / "mlp" / "1" / "model.onnx"
        raw = raw_p50(model, args.threads, args.requests)

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ctx = mp.get_context("spawn")
        ready = ctx.Event()
        proc = ctx.Process(target=serve, args=(str(root), port, ready), daemon=True)
        proc.start()
        if not ready.wait(120):
            raise SystemExit("server did not start")
        try:
            x = np.random.default_rng(2).standard_normal((1, 784)).astype(np.float32)
            jb, jh = json_body(x)
            bb, bh = binary_body(x)
            json_p50 = statistics.median(latencies(port, jb, jh, args.requests)) * 1000
            bin_p50 = statistics.median(latencies(port, bb, bh, args.requests)) * 1000
            one0 = throughput(port, bb, bh, 1, args.seconds)
            many0 = throughput(port, bb, bh, args.clients, args.seconds)
            one = throughput(port, bb, bh, 1, args.seconds, "mlp_batched")
            c0, s0 = batch_sizes(port, "mlp_batched")
            many = throughput(port, bb, bh, args.clients, args.seconds, "mlp_batched")
            c1, s1 = batch_sizes(port, "mlp_batched")
        finally:
            proc.terminate()
            proc.join(10)

    mean_batch = (s1 - s0) / max(c1 - c0, 1)
    print(f"raw session.run p50          {raw:8.3f} ms")
    print(
        f"KServe JSON infer p50        {json_p50:8.3f} ms   overhead {json_p50 - raw:6.3f} ms (target <= 1.0)"
    )
    print(
        f"KServe binary infer p50      {bin_p50:8.3f} ms   overhead {bin_p50 - raw:6.3f} ms (target <= 0.5)"
    )
    print(
        f"no queue delay:  1 client {one0:7.1f} req/s, {args.clients} clients {many0:7.1f} req/s, "
        f"ratio {many0 / one0:5.2f}x"
    )
    print(
        f"queue delay {args.delay_ms:g} ms: 1 client {one:7.1f} req/s, "
        f"{args.clients} clients {many:7.1f} req/s, "
        f"ratio {many / one:5.2f}x (target >= 3)"
    )
    print(f"mean batch size under load   {mean_batch:8.2f} requests")
    print(f"HTTP parser: {http_parser()}")
    ok = json_p50 - raw <= 1.0 and bin_p50 - raw <= 0.5 and many / one >= 3
    print("PASS" if ok else "MISS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
