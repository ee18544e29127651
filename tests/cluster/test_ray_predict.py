"""``onnxkit predict --ray ADDRESS``: the same bytes as a local run, on the session's two-node cluster."""

from __future__ import annotations

import io
import itertools
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cluster_fixtures import RayCluster

from onnxkit.serve.ray_predict import text_ranges

WORDS = ["the", "cat", "sat", "on", "a", "mat", "while", "rain", "fell", "all", "day", "over", "quiet", "hills",
         "and", "rivers", "of", "france"]


def texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, 40))) for _ in range(n)]


def both(ray_cluster: RayCluster, model: Path, source: Path, tmp_path: Path, *options: str) -> tuple[bytes, bytes, str]:
    """Local predict's output and Ray predict's (2 workers), and Ray's summary line."""
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    here = ray_cluster.onnxkit("predict", str(model), "-i", str(source), "-o", str(local), "-q", *options)
    there = ray_cluster.onnxkit("predict", str(model), "-i", str(source), "-o", str(on_ray), "-q", *options,
                                "--ray", ray_cluster.address, "--workers", "2")
    assert here.returncode == there.returncode, (here.stderr, there.stderr)
    assert here.stderr.splitlines()[-1].split("->")[0] == there.stderr.splitlines()[-1].split("->")[0]
    return local.read_bytes(), on_ray.read_bytes(), there.stderr.splitlines()[-1]


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
    local, on_ray, summary = both(ray_cluster, tiny_embed_model, source, tmp_path, "--max-batch-size", "1")
    assert on_ray == local
    assert "2996 ok, 3 failed" in summary
    lines = on_ray.decode().splitlines()
    assert len(lines) == 2999 and "line 11 is not JSON" in lines[10]
    assert json.loads(lines[49])["id"] == "line-51"  # numbered as in the file, after the skipped blank line


def test_parquet_text_column_matches_a_local_run(
    ray_cluster: RayCluster, tiny_embed_model: Path, tmp_path: Path
) -> None:
    column: list[str | None] = list(texts(500, seed=1))
    column[7] = None
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": list(range(500)), "text": column}), source, row_group_size=64)
    # Merged batches (the default): the same lines in the same order, floats equal to float32 rounding
    local, on_ray, summary = both(ray_cluster, tiny_embed_model, source, tmp_path)
    assert_same_up_to_rounding(local, on_ray)
    assert "499 ok, 1 failed" in summary
    assert "row 8 has no text" in on_ray.decode().splitlines()[7]


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


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("parts", [1, 3, 50])
def test_text_ranges_number_lines_as_python_reads_them(tmp_path: Path, ending: str, parts: int) -> None:
    lines = [t + ending for t in texts(40)] + ["last, without a newline"]
    source = tmp_path / "in.txt"
    source.write_bytes("".join(lines).encode())
    with source.open(encoding="utf-8") as f:
        want = list(enumerate(f, 1))
    data = source.read_bytes()
    got = []
    ranges = text_ranges(source, parts, min_bytes=1)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))  # contiguous
    for start, end, number in ranges:
        for offset, raw in enumerate(io.TextIOWrapper(io.BytesIO(data[start:end]), encoding="utf-8")):
            got.append((number + offset, raw))
    assert got == want
