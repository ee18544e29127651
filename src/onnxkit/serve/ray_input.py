"""``onnxkit predict --ray``'s input as a Ray Dataset: ``(number, raw, error)`` rows, read where the file is.

A ``.jsonl``/``.txt`` file is cut into byte ranges after a ``\\n``, each knowing the number of its
first line, and every range is read with ``serve.predict.numbered_lines``, as local predict reads the
whole file: the same lines, the same numbers, and the same errors for a line that is not UTF-8 or
is longer than the body limit. A ``.parquet`` file is read by row groups (its ``text`` column; rows
numbered from 1). Blank lines are dropped here, as local predict skips them. The reads run on the
driver's node (``supports_distributed_reads``): the file is on that machine, not necessarily on the
others.
"""

from __future__ import annotations

import functools
import io
import math
import mmap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from onnxkit.errors import InvalidRequest, OnnxkitError, PayloadTooLarge
from onnxkit.serve.predict import numbered_lines

RANGE_BYTES = 1 << 20  # the least a read task reads of a text file
ROWS_PER_BLOCK = 8192
SCHEMA = pa.schema([("number", pa.int64()), ("raw", pa.string()), ("status", pa.int32()), ("error", pa.string())])
ERRORS: dict[int, type[OnnxkitError]] = {413: PayloadTooLarge}  # what numbered_lines reports, by status


def line_error(status: int, message: str) -> OnnxkitError:
    """A reading error as a row carried it (``status``, ``error``), back as the error local predict has."""
    return ERRORS.get(status, InvalidRequest)(message)


def line_offset(path: Path, number: int) -> int:
    """The byte where line ``number`` (from 1) starts."""
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        offset = 0
        for _ in range(number - 1):
            offset = mm.find(b"\n", offset) + 1
            if offset == 0:
                return len(mm)
        return offset


def text_ranges(path: Path, parts: int, *, start: int = 0, number: int = 1,
                min_bytes: int = RANGE_BYTES) -> list[tuple[int, int, int]]:
    """(start byte, end byte, first line's number) for up to ``parts`` ranges from ``start``, cut after a ``\\n``."""
    size = path.stat().st_size
    if size <= start:
        return []
    parts = max(1, min(parts, math.ceil((size - start) / min_bytes)))
    ranges: list[tuple[int, int, int]] = []
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        first = start
        for k in range(1, parts):
            cut = mm.find(b"\n", start + (size - start) * k // parts - 1) + 1
            if cut <= first:  # no newline after the target: the rest is one range
                break
            ranges.append((first, cut, number))
            number += mm[first:cut].count(b"\n")
            first = cut
        if first < size:
            ranges.append((first, size, number))
    return ranges


def _rows(numbers: list[int], raws: list[str | None], statuses: list[int | None],
          errors: list[str | None]) -> pa.Table:
    return pa.table({"number": numbers, "raw": raws, "status": statuses, "error": errors}, schema=SCHEMA)


def _read_text(path: str, start: int, end: int, number: int, max_bytes: int) -> Iterator[pa.Table]:
    with open(path, "rb") as f:
        f.seek(start)
        chunk = f.read(end - start)
    columns: tuple[list[Any], ...] = ([], [], [], [])
    for n, raw in numbered_lines(io.BytesIO(chunk), max_bytes, first=number):
        if isinstance(raw, str) and not raw.strip():
            continue
        row = (n, None, int(raw.status), raw.message) if isinstance(raw, OnnxkitError) else (n, raw, None, None)
        for column, value in zip(columns, row, strict=True):
            column.append(value)
        if len(columns[0]) >= ROWS_PER_BLOCK:
            yield _rows(*columns)
            columns = ([], [], [], [])
    if columns[0]:
        yield _rows(*columns)


def _read_parquet(path: str, groups: list[int], number: int, skip: int) -> Iterator[pa.Table]:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path).read_row_groups(groups, columns=["text"])
    for batch in table.to_batches(ROWS_PER_BLOCK):
        texts = batch.column(0).cast(pa.string()).to_pylist()
        numbers = list(range(number, number + len(texts)))
        number += len(texts)
        kept = [(n, t) for n, t in zip(numbers, texts, strict=True) if n > skip]  # a resumed run's rows
        if kept:
            yield _rows([n for n, _ in kept], [t for _, t in kept], [None] * len(kept), [None] * len(kept))


class LinesDatasource(Datasource):  # type: ignore[misc]
    """A ``.jsonl``/``.txt``/``.parquet`` input from line (or row) ``first`` on."""

    def __init__(self, path: Path, first: int = 1, max_line_bytes: int = 8 << 20,
                 range_bytes: int = RANGE_BYTES) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.path = path
        self.first = first
        self.max_line_bytes = max_line_bytes
        self.range_bytes = range_bytes

    @property
    def supports_distributed_reads(self) -> bool:
        return False  # the file is on the driver's machine; other nodes may not see it

    def estimate_inmemory_data_size(self) -> int:
        return self.path.stat().st_size

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        path, parts = str(self.path), parallelism if parallelism > 0 else 8
        if self.path.suffix == ".parquet":
            return self._parquet_tasks(path, parts)
        tasks = []
        start = line_offset(self.path, self.first)
        ranges = text_ranges(self.path, parts, start=start, number=self.first, min_bytes=self.range_bytes)
        for begin, end, number in ranges:
            meta = BlockMetadata(num_rows=None, size_bytes=end - begin, input_files=(path,), exec_stats=None)
            read = functools.partial(_read_text, path, begin, end, number, self.max_line_bytes)
            tasks.append(ReadTask(read, meta, schema=SCHEMA))
        return tasks

    def _parquet_tasks(self, path: str, parts: int) -> list[ReadTask]:
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path).metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        tasks, number = [], 1
        parts = max(1, min(len(sizes), parts))
        for k in range(parts):
            groups = list(range(k * len(sizes) // parts, (k + 1) * len(sizes) // parts))
            rows = sum(sizes[g] for g in groups)
            if groups and number + rows > self.first:  # a resumed run reads from row ``first`` on
                block = BlockMetadata(num_rows=None, size_bytes=None, input_files=(path,), exec_stats=None)
                read = functools.partial(_read_parquet, path, groups, number, self.first - 1)
                tasks.append(ReadTask(read, block, schema=SCHEMA))
            number += rows
        return tasks
