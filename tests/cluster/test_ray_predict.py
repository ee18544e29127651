"""``onnxkit predict --ray ADDRESS``: the same bytes as a local run, on the session's two-node cluster."""

from __future__ import annotations

import codecs
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cluster_fixtures import RayCluster

from onnxkit.errors import OnnxkitError
from onnxkit.serve.predict import numbered_lines
from onnxkit.serve.predict_partial import open_partial, partial_path
from onnxkit.serve.ray_input import LinesDatasource
from onnxkit.serve.ray_predict import wait_for_cpus

WORDS = ["the", "cat", "sat", "on", "a", "mat", "while", "rain", "fell", "all", "day", "over", "quiet", "hills",
         "and", "rivers", "of", "france"]


def texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, 40))) for _ in range(n)]


def predict(ray_cluster: RayCluster, model: Path, source: Path, output: Path, *options: str) -> str:
    """``onnxkit predict`` (local, or on the cluster with ``--ray``); its summary line."""
    done = ray_cluster.onnxkit("predict", str(model), "-i", str(source), "-o", str(output), "-q", *options)
    assert done.returncode in (0, 1) and done.stderr, done.stderr  # 1: some line failed
    return done.stderr


RAY = ("--workers", "2")


def test_jsonl_with_bad_lines_one_text_per_run_gives_the_bytes_of_a_local_run(
    ray_cluster: RayCluster, tiny_embed_model: Path, tmp_path: Path
) -> None:
    rows: list[str] = [json.dumps({"input": t, "encoding_format": "float"}) for t in texts(3000)]
    rows[10] = "this line is not json"
    rows[20] = "[1, 2, 3]"
    rows[30] = json.dumps({"input": []})
    rows[40] = ""  # blank: skipped, as locally
    rows[50] = json.dumps({"custom_id": "c-51", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}})
    rows[60] = json.dumps({"input": "a line ending in CRLF"}) + "\r"
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(rows))  # no newline after the last line
    # One text per onnxruntime run: each line's floats depend on that line alone (see docs/scale-out.md)
    local = tmp_path / "local.jsonl"
    assert "2996 ok, 3 failed -> " in predict(ray_cluster, tiny_embed_model, source, local, "--max-batch-size", "1")
    answers = local.read_bytes().splitlines(keepends=True)
    assert len(answers) == 2999 and b"line 11 is not JSON" in answers[10]
    assert json.loads(answers[49])["id"] == "line-51"  # numbered as in the file, after the skipped blank line
    # On Ray, as an interrupted run resumed: its first 1500 answers are in the partial already
    on_ray = tmp_path / "ray.jsonl"
    partial, _ = open_partial(on_ray, source, "tiny-embed", tiny_embed_model, restart=False)
    with partial:
        partial.write(b"".join(answers[:1500]).decode())
    summary = predict(ray_cluster, tiny_embed_model, source, on_ray, "--max-batch-size", "1",
                      "--ray", ray_cluster.address, *RAY)
    assert "resuming" in summary and "2996 ok, 3 failed (1500 resumed" in summary
    assert on_ray.read_bytes() == local.read_bytes()


def test_txt_with_a_line_that_is_not_utf8_gives_the_bytes_of_a_local_run(
    ray_cluster: RayCluster, tiny_embed_model: Path, tmp_path: Path
) -> None:
    lines = [t.encode() for t in texts(400, seed=2)]
    lines[4] = b"not utf-8: \xff\xfe"
    lines[9] = b""  # blank: skipped, as locally
    source = tmp_path / "in.txt"
    source.write_bytes(b"\n".join(lines) + b"\n")
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert "398 ok, 1 failed -> " in predict(ray_cluster, tiny_embed_model, source, local, "--max-batch-size", "1")
    summary = predict(ray_cluster, tiny_embed_model, source, on_ray, "--max-batch-size", "1",
                      "--ray", ray_cluster.address, *RAY)
    assert "398 ok, 1 failed -> " in summary
    assert on_ray.read_bytes() == local.read_bytes()
    assert "line 5 is not UTF-8" in on_ray.read_text().splitlines()[4]


def test_parquet_text_column_matches_a_local_run(
    ray_cluster: RayCluster, tiny_embed_model: Path, tmp_path: Path
) -> None:
    column: list[str | None] = list(texts(500, seed=1))
    column[7] = None
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": list(range(500)), "text": column}), source, row_group_size=64)
    # Merged batches (the default): the same lines in the same order, floats equal to float32 rounding
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert "499 ok, 1 failed -> " in predict(ray_cluster, tiny_embed_model, source, local)
    summary = predict(ray_cluster, tiny_embed_model, source, on_ray, "--ray", ray_cluster.address, *RAY)
    assert "499 ok, 1 failed -> " in summary
    assert_same_up_to_rounding(local.read_bytes(), on_ray.read_bytes())
    assert "row 8 has no text" in on_ray.read_text().splitlines()[7]


def assert_same_up_to_rounding(want: bytes, got: bytes) -> None:
    """Equal JSON lines, except that float32 results may differ by their last bit."""
    wants, gots = want.decode().splitlines(), got.decode().splitlines()
    assert len(wants) == len(gots)
    for a, b in zip(wants, gots, strict=True):
        x, y = json.loads(a), json.loads(b)
        if "data" in x:
            for u, v in zip(x.pop("data"), y.pop("data"), strict=True):
                np.testing.assert_allclose(u.pop("embedding"), v.pop("embedding"), atol=1e-6)
                assert u == v
        assert x == y


def read_all(source: Path, parts: int, first: int = 1, max_bytes: int = 64) -> list[tuple[object, ...]]:
    """Every row the datasource's read tasks give, in order: what the actors get."""
    datasource = LinesDatasource(source, first, max_line_bytes=max_bytes, range_bytes=1)
    rows: list[tuple[object, ...]] = []
    for task in datasource.get_read_tasks(parts):
        for table in task():
            rows += zip(*(table.column(c).to_pylist() for c in ("number", "raw", "status", "error")), strict=True)
    return rows


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("parts", [1, 3, 50])
def test_the_dataset_reads_lines_as_local_predict_does(tmp_path: Path, ending: bytes, parts: int) -> None:
    lines = [t.encode() for t in texts(30)]
    lines[3] = b""  # blank: skipped
    lines[5] = b"not utf-8: \xff\xfe"
    lines[7] = b"x" * 100  # longer than the limit of 64 bytes
    lines[9] = "\ufeffa mark that is not the file's first".encode()
    source = tmp_path / "in.txt"
    source.write_bytes(codecs.BOM_UTF8 + ending.join(lines) + ending + b"last, without a newline")
    with source.open("rb") as f:
        want = [(n, None, int(raw.status), raw.message) if isinstance(raw, OnnxkitError) else (n, raw, None, None)
                for n, raw in numbered_lines(f, 64) if not (isinstance(raw, str) and not raw.strip())]
    assert read_all(source, parts) == want
    assert read_all(source, parts, first=12) == [row for row in want if int(row[0]) >= 12]  # resumed


def test_the_free_cpus_check_waits_briefly_for_cpus_coming_back() -> None:
    wait_for_cpus(lambda: 2.0, 2, 1.0, 2.0)  # enough: no wait
    freed = iter([0.0, 1.0, 2.0])  # a run that just ended hands its CPUs back
    wait_for_cpus(lambda: next(freed, 2.0), 2, 1.0, 2.0, wait_s=5)
    with pytest.raises(OnnxkitError, match=r"needs 4 worker\(s\) x 0.5 CPU = 2 CPUs, .* 0.5 of its 2 CPUs free"):
        wait_for_cpus(lambda: 0.5, 4, 0.5, 2.0, wait_s=0)


def test_a_cluster_without_the_free_cpus_fails_at_once_and_writes_no_output(
    ray_cluster: RayCluster, tiny_embed_model: Path, tmp_path: Path
) -> None:
    # another driver's actor holds one of the cluster's two CPUs while it runs
    hold = ("import ray, sys\n"
            f"ray.init(address={ray_cluster.address!r}, log_to_driver=False)\n"
            "holder = ray.remote(num_cpus=1)(type('Hold', (), {'ready': lambda self: True})).remote()\n"
            "ray.get(holder.ready.remote())\nprint('holding', flush=True)\nsys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", hold], env=ray_cluster.env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        source = tmp_path / "in.txt"
        source.write_text("".join(t + "\n" for t in texts(20)))
        output = tmp_path / "out.jsonl"
        started = time.monotonic()
        done = ray_cluster.onnxkit("predict", str(tiny_embed_model), "-i", str(source), "-o", str(output), "-q",
                                   "--ray", ray_cluster.address, "--workers", "2", timeout=120)
        assert done.returncode == 1, done.stderr
        assert "needs 2 worker(s) x 1 CPU = 2 CPUs, but the cluster has 1 of its 2 CPUs free" in done.stderr
        assert "--workers" in done.stderr and "add a node" in done.stderr
        assert time.monotonic() - started < 60  # not Ray Data's endless wait
        # nothing half-written: no output, and an empty partial that the same command resumes, as after
        # any failure of predict
        assert not output.exists() and partial_path(output).read_bytes() == b""
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
