"""``onnxkit predict --ray``: the input file as a Ray Dataset, through a pool of actors that each hold the model.

The file is read as a Ray Dataset of ``(number, raw)`` rows: byte ranges of a ``.jsonl``/``.txt``
cut at line ends (a ``.parquet`` file: its row groups, ``text`` column), each range knowing its first
line number, read on the driver's node (where the file is). ``map_batches`` sends batches to a
fixed pool of ``--workers`` actors; each runs the model's app in its own event loop, exactly as
local ``predict`` does (``serve.predict``: the same line parsing, requests, batchers and rendering),
so a line's output is the same bytes. Ray Data keeps the input order; the driver writes the lines
as they come and shows its own progress bar.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import math
import mmap
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from onnxkit.errors import InvalidRequest
from onnxkit.models.folder import model_kind
from onnxkit.serve.app import ModelSpec
from onnxkit.serve.predict import Line, Summary, answers, app_client, parse_line, read_lines, render, text_line
from onnxkit.serve.ray_cluster import connect
from onnxkit.serve.ray_shipping import Shipment, land, ship
from onnxkit.settings import ServerSettings, default_home

RANGE_BYTES = 1 << 20  # the least a read task reads of a text file
ROWS_PER_BLOCK = 8192
SCHEMA = pa.schema([("number", pa.int64()), ("raw", pa.string())])


def _terminators(data: bytes) -> int:
    # Lines as Python's text mode counts them (universal newlines): \r\n, \r and \n each end one.
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def text_ranges(path: Path, parts: int, min_bytes: int = RANGE_BYTES) -> list[tuple[int, int, int]]:
    """(start byte, end byte, number of the first line) for up to ``parts`` ranges cut after a newline."""
    size = path.stat().st_size
    if size == 0:
        return []
    parts = max(1, min(parts, math.ceil(size / min_bytes)))
    ranges: list[tuple[int, int, int]] = []
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        start, number = 0, 1
        for k in range(1, parts + 1):
            cut = mm.find(b"\n", size * k // parts - 1) + 1 if k < parts else size
            if cut <= start:  # no newline after the target: the rest is one range
                continue
            ranges.append((start, cut, number))
            number += _terminators(mm[start:cut])
            start = cut
        if start < size:
            ranges.append((start, size, number))
    return ranges


def _read_text(path: str, start: int, end: int, number: int) -> Iterator[pa.Table]:
    with open(path, "rb") as f:
        f.seek(start)
        chunk = f.read(end - start)
    numbers: list[int] = []
    raws: list[str] = []
    for raw in io.TextIOWrapper(io.BytesIO(chunk), encoding="utf-8"):
        numbers.append(number)
        raws.append(raw)
        number += 1
        if len(raws) >= ROWS_PER_BLOCK:
            yield pa.table({"number": numbers, "raw": raws}, schema=SCHEMA)
            numbers, raws = [], []
    if raws:
        yield pa.table({"number": numbers, "raw": raws}, schema=SCHEMA)


def _read_parquet(path: str, groups: list[int], number: int) -> Iterator[pa.Table]:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path).read_row_groups(groups, columns=["text"])
    for batch in table.to_batches(ROWS_PER_BLOCK):
        texts = batch.column(0).cast(pa.string())
        numbers = pa.array(range(number, number + len(texts)), pa.int64())
        number += len(texts)
        yield pa.Table.from_arrays([numbers, texts], schema=SCHEMA)


class LinesDatasource(Datasource):  # type: ignore[misc]
    """A ``.jsonl``/``.txt``/``.parquet`` input as ``(number, raw)`` rows, read where the file is."""

    def __init__(self, path: Path) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.path = path

    @property
    def supports_distributed_reads(self) -> bool:
        return False  # the file is on the driver's machine; other nodes may not see it

    def estimate_inmemory_data_size(self) -> int:
        return self.path.stat().st_size

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        path = str(self.path)
        if self.path.suffix == ".parquet":
            return self._parquet_tasks(path, parallelism)
        tasks = []
        for start, end, number in text_ranges(self.path, parallelism if parallelism > 0 else 8):
            meta = BlockMetadata(num_rows=None, size_bytes=end - start, input_files=(path,), exec_stats=None)
            tasks.append(ReadTask(functools.partial(_read_text, path, start, end, number), meta, schema=SCHEMA))
        return tasks

    def _parquet_tasks(self, path: str, parallelism: int) -> list[ReadTask]:
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path).metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        parts = max(1, min(len(sizes), parallelism if parallelism > 0 else 8))
        tasks, number = [], 1
        for k in range(parts):
            groups = list(range(k * len(sizes) // parts, (k + 1) * len(sizes) // parts))
            if not groups:
                continue
            rows = sum(sizes[g] for g in groups)
            block = BlockMetadata(num_rows=rows, size_bytes=None, input_files=(path,), exec_stats=None)
            tasks.append(ReadTask(functools.partial(_read_parquet, path, groups, number), block, schema=SCHEMA))
            number += rows
        return tasks


class Predictor:
    """A Ray Data actor: the model's app in this process, ``(number, raw)`` rows in, rendered lines out."""

    def __init__(self, spec: ModelSpec, shipment: Shipment, source_suffix: str, settings: ServerSettings,
                 concurrency: int) -> None:
        self.spec = replace(spec, path=land(shipment, default_home()))
        self.kind = model_kind(self.spec.path)
        self.suffix = source_suffix
        self.concurrency = max(1, concurrency)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="onnxkit-predict", daemon=True).start()
        self.exits = contextlib.AsyncExitStack()
        self.client = self._await(self.exits.enter_async_context(app_client(self.spec, settings)))

    def _await(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def _line(self, number: int, raw: str | None) -> Line | None:
        if self.suffix == ".parquet":
            return text_line(number, raw, self.spec, self.kind)
        return parse_line(number, raw or "", self.spec, self.kind, is_text=self.suffix == ".txt")

    async def _answer(self, lines: list[Line]) -> tuple[list[str], list[bool]]:
        rendered: list[str] = []
        ok: list[bool] = []
        async for line, answer in answers(lines, self.client, self.concurrency):
            rendered.append(render(line, answer))
            ok.append(answer.status < 400)
        return rendered, ok

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = zip(batch.column("number").to_pylist(), batch.column("raw").to_pylist(), strict=True)
        lines = [line for number, raw in rows if (line := self._line(number, raw)) is not None]
        rendered, ok = self._await(self._answer(lines))
        return pa.table({"line": pa.array(rendered, pa.string()), "ok": pa.array(ok, pa.bool_())})


def predict_on_ray(
    spec: ModelSpec,
    source: Path,
    out: IO[str],
    *,
    address: str | None,
    workers: int | None,
    settings: ServerSettings,
    concurrency: int = 64,
    progress: bool = True,
    transfer: str = "auto",
) -> Summary:
    from tqdm import tqdm

    if workers is not None and workers < 1:
        raise InvalidRequest(f"--workers {workers}: expected at least 1 actor")
    if not source.is_file():
        raise InvalidRequest(f"input file {source} does not exist")
    if next(read_lines(source, spec, model_kind(spec.path)), None) is None:
        return Summary()  # nothing to answer (a file this model cannot take failed just above)
    with connect(address) as cluster:
        import ray

        workers = workers or cluster.nodes  # one actor per node, with its cores as threads
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # output lines in input order
        context.enable_progress_bars = False  # ours counts written lines
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        threads = settings.threads or max(1, cluster.cpus // workers)
        settings = replace(settings, threads=threads)
        shipment = ship(spec.name, spec.path, transfer)
        rows = ray.data.read_datasource(LinesDatasource(source), num_cpus=0)
        results = rows.map_batches(
            Predictor,
            fn_constructor_args=(spec, shipment, source.suffix, settings, concurrency),
            batch_size=max(256, 4 * concurrency),
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=min(float(threads), cluster.cpus / workers) if cluster.cpus else threads,
        )
        summary = Summary()
        bar = tqdm(desc=f"predict {spec.name} on Ray ({workers} workers)", unit="req", disable=not progress)
        for batch in results.iter_batches(batch_format="pyarrow", batch_size=None):
            for line, ok in zip(batch.column("line").to_pylist(), batch.column("ok").to_pylist(), strict=True):
                out.write(line + "\n")
                if ok:
                    summary.ok += 1
                else:
                    summary.failed += 1
            bar.update(batch.num_rows)
        bar.close()
    return summary
