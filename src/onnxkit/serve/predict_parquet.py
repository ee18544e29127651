"""``onnxkit predict`` on a Parquet file: the rows of its ``text`` column, each a request as a ``.txt`` line is.

A module of its own because it is a reader of its own (``serve.predict`` reads bytes line by line);
pyarrow, which comes with ``onnxkit[ray]``, is imported only when a Parquet file is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from onnxkit.errors import InvalidRequest, MissingDependency


def parquet_texts(path: Path, *, skip: int = 0, column: str = "text") -> Iterator[tuple[int, str | None]]:
    """A Parquet file's ``text`` column as (row number from 1, text or None for a null), after ``skip`` rows."""
    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError as exc:
        raise MissingDependency("pyarrow", "ray") from exc
    parquet = pq.ParquetFile(path)
    if column not in parquet.schema_arrow.names:
        raise InvalidRequest(f"{path} has no {column!r} column (it has {', '.join(parquet.schema_arrow.names)}); "
                             f"a Parquet input holds one text per row in a column named {column!r}")
    texts = (text for batch in parquet.iter_batches(columns=[column]) for text in batch.column(0).to_pylist())
    yield from ((n, text) for n, text in enumerate(texts, 1) if n > skip)
