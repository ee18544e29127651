"""Issue 13's figures for Ray, each against the plain server in the same run (models cached: `make models`).

- Proxy overhead: KServe v2 JSON infer p50 (and p99), the MLP 784-512-10 at batch 1, through Ray Serve's
  proxy (one replica, private local instance) minus the plain server's, in alternating rounds. Target: < 3 ms.
- /v1/embeddings throughput with MiniLM, 16 clients x 32 sentences: the plain server, Ray with
  2 replicas x 1 thread, Ray with 1 replica x 2 threads.
- `onnxkit predict` on 20,000 texts with MiniLM: local against `--ray --workers 2`, sentences/s end to
  end (the Ray run's figure includes starting its private instance and the actors; its start-up alone
  is measured on a 16-line file and reported too).

Every server and predict run is the `onnxkit` command line in its own process, as a user runs it.

    python bench/bench_ray.py [--requests 2000] [--rounds 3] [--seconds 8] [--texts 20000] [--parts proxy,...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_kserve import build_mlp, json_body, latencies
from bench_openai import EMBED, free_port, server_embeddings
from sentences import sentences

ONNXKIT = [sys.executable, "-m", "onnxkit"]


@contextmanager
def server(*args: str) -> Iterator[str]:
    """``onnxkit serve ARGS --port P --detach``, stopped with ``onnxkit stop`` afterwards."""
    port = free_port()
    started = subprocess.run([*ONNXKIT, "serve", *args, "--port", str(port), "--detach", "--no-access-log"],
                             capture_output=True, text=True, timeout=600, check=False)
    if started.returncode != 0:
        raise SystemExit(f"onnxkit serve {' '.join(args)} failed:\n{started.stderr[-3000:]}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([*ONNXKIT, "stop", "--port", str(port)], capture_output=True, timeout=120, check=False)


def kserve_latency(url: str, n: int) -> tuple[float, float]:
    """(p50, p99) in ms of one client's KServe v2 JSON infers, one after the other."""
    x = np.random.default_rng(2).standard_normal((1, 784)).astype(np.float32)
    body, headers = json_body(x)
    took = sorted(latencies(int(url.rsplit(":", 1)[1]), body, headers, n))
    return statistics.median(took) * 1000, took[min(len(took) - 1, int(len(took) * 0.99))] * 1000


def predict_rate(source: Path, texts: int, *ray: str) -> tuple[float, float]:
    """(sentences/s, seconds) of ``onnxkit predict EMBED -i source`` end to end."""
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        done = subprocess.run([*ONNXKIT, "predict", EMBED, "-i", str(source), "-o", f"{tmp}/out.jsonl", "-q", *ray],
                              capture_output=True, text=True, timeout=3600, check=False)
        seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"onnxkit predict {' '.join(ray)} failed:\n{done.stderr[-3000:]}")
    return texts / seconds, seconds


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000, help="KServe requests per latency measurement")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each embeddings throughput run")
    ap.add_argument("--texts", type=int, default=20_000, help="texts for the predict comparison")
    ap.add_argument("--rounds", type=int, default=3, help="alternating plain/Ray rounds for the proxy figure")
    ap.add_argument("--parts", default="proxy,embeddings,predict",
                    help="which figures, comma-separated: proxy, embeddings, predict")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    texts = sentences(512)
    lines: list[str] = []

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_mlp(root / "repo" / "mlp" / "1" / "model.onnx")
        (root / "repo" / "mlp" / "config.yaml").write_text(
            "max_batch_size: 32\ndynamic_batching:\n  max_queue_delay_ms: 0\nthreads: 1\n"
        )
        repo = str(root / "repo")

        # 1. what Ray Serve's proxy adds to one KServe v2 JSON request (alternating runs: the load drifts)
        added = 0.0
        if "proxy" in parts:
            plain: list[tuple[float, float]] = []
            on_ray: list[tuple[float, float]] = []
            for _ in range(args.rounds):
                with server("--repository", repo, "--grpc-port", "-1") as url:
                    plain.append(kserve_latency(url, args.requests))
                with server("--repository", repo, "--ray", "--replicas", "1") as url:
                    on_ray.append(kserve_latency(url, args.requests))
            p50, p99 = (statistics.median(r[i] for r in plain) for i in (0, 1))
            r50, r99 = (statistics.median(r[i] for r in on_ray) for i in (0, 1))
            added = r50 - p50
            lines.append(f"KServe JSON, MLP batch 1, median of {args.rounds} round(s): plain p50 {p50:6.3f} / p99 "
                         f"{p99:6.3f} ms, Ray Serve p50 {r50:6.3f} / p99 {r99:6.3f} ms; the proxy adds {added:6.3f} ms "
                         "at p50 (target < 3)")

        # 2. embeddings throughput: one process against replicas
        for label, extra in (("plain server (all cores)", ()),
                             ("Ray, 2 replicas x 1 thread", ("--ray", "--replicas", "2", "--threads", "1")),
                             ("Ray, 1 replica x 2 threads", ("--ray", "--replicas", "1", "--threads", "2"))):
            if "embeddings" not in parts:
                break
            with server(EMBED, *extra) as url:
                rate = asyncio.run(server_embeddings(url, texts, args.seconds))
            lines.append(f"/v1/embeddings, 16 clients x 32, {label:28s} {rate:8.1f} sentences/s")

        # 3. predict: local against Ray Data with 2 workers
        if "predict" not in parts:
            args.texts = 0
        source = root / "texts.txt"
        source.write_text("".join(texts[i % len(texts)] + "\n" for i in range(args.texts)))
        tiny = root / "tiny.txt"
        tiny.write_text("".join(t + "\n" for t in texts[:16]))
        if not args.texts:
            return _report(lines, added)
        local_rate, local_s = predict_rate(source, args.texts)
        ray_rate, ray_s = predict_rate(source, args.texts, "--ray", "--workers", "2")
        _, startup = predict_rate(tiny, 16, "--ray", "--workers", "2")
        lines.append(f"predict {args.texts} texts: local {local_rate:7.1f} sentences/s ({local_s:.1f} s), "
                     f"--ray --workers 2 {ray_rate:7.1f} sentences/s ({ray_s:.1f} s, of which ~{startup:.1f} s "
                     f"start-up: a 16-line run)")

    return _report(lines, added)


def _report(lines: list[str], added: float) -> int:
    print(f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    for line in lines:
        print(line)
    return 0 if added < 3 else 1


if __name__ == "__main__":
    sys.exit(main())
