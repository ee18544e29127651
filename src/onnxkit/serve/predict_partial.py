"""``onnxkit predict --output FILE``: written as ``FILE.partial`` and resumed from it after an interruption.

Every answer is one line, written and flushed as it comes, so a process that is killed keeps every
line it finished; the file is fsynced at most once a second (``SYNC_SECONDS``), so a machine that goes
down loses at most the last second. Beside it, ``FILE.partial.json`` records what the lines answer:
the input (its size, modification time and the SHA-256 of its first MiB) and the model. The same
command run again keeps the partial's complete lines (a torn last line is dropped and redone), skips
as many requests of the input and appends the rest, so the finished file is the one an uninterrupted
run writes. A partial whose input or model changed is refused; ``--restart`` discards it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxkit.errors import InvalidRequest, OnnxkitError
from onnxkit.serve.predict import rendered_ok

SYNC_SECONDS = 1.0
HEAD_BYTES = 1 << 20  # how much of the input the fingerprint hashes: cheap on any file size
FORMAT = 1


@dataclass(frozen=True)
class Resumed:
    """What a run starts from: the answers already in the partial."""

    lines: int = 0
    ok: int = 0
    failed: int = 0
    dropped_bytes: int = 0  # a torn last line (or anything after the last complete line), cut off


class SyncedFile(io.TextIOWrapper):
    """Text appended to a file; each flush reaches the OS, and the disk at most every ``every`` seconds."""

    def __init__(self, path: Path, every: float = SYNC_SECONDS) -> None:
        super().__init__(path.open("ab"), encoding="utf-8", newline="\n")
        self.every = every
        self.synced = time.monotonic()
        self.lines = 0  # lines written through this object

    def write(self, s: str) -> int:
        self.lines += s.count("\n")
        return super().write(s)

    def flush(self) -> None:
        super().flush()
        if time.monotonic() - self.synced >= self.every:
            os.fsync(self.fileno())
            self.synced = time.monotonic()

    def close(self) -> None:
        if not self.closed:
            super().flush()
            os.fsync(self.fileno())
        super().close()


def partial_path(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def record_path(output: Path) -> Path:
    return output.with_name(output.name + ".partial.json")


def fingerprint(source: Path, model: str, model_path: Path) -> dict[str, Any]:
    """What the partial's lines answer: the input as it is now, and the model."""
    if not source.is_file():
        raise InvalidRequest(f"input file {source} does not exist")
    stat = source.stat()
    with source.open("rb") as f:
        head = hashlib.sha256(f.read(HEAD_BYTES)).hexdigest()
    return {
        "format": FORMAT,
        "input": str(source.resolve()),
        "input_bytes": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        "input_head_sha256": head,
        "model": model,
        "model_path": str(model_path.resolve()),
    }


def open_partial(
    output: Path, source: Path, model: str, model_path: Path, *, restart: bool
) -> tuple[SyncedFile, Resumed]:
    """The partial to append to, and what it already holds (nothing on a fresh start or with ``restart``)."""
    partial, record = partial_path(output), record_path(output)
    now = fingerprint(source, model, model_path)
    if restart or not partial.exists():
        # The old partial goes before the new record is written: a crash in between never pairs old
        # lines with a new input's record.
        partial.unlink(missing_ok=True)
        _write_record(record, now)
        partial.touch()
        return SyncedFile(partial), Resumed()
    _check_record(output, record, now)
    resumed = _keep_complete_lines(partial)
    return SyncedFile(partial), resumed


def finish(output: Path) -> None:
    """The run is complete: the partial becomes ``output`` and its record goes."""
    partial_path(output).replace(output)
    record_path(output).unlink(missing_ok=True)
    _sync_dir(output.parent)


def _check_record(output: Path, record: Path, now: dict[str, Any]) -> None:
    partial = partial_path(output)
    fix = f"run with --restart to discard {partial.name} and start over"
    try:
        was = json.loads(record.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OnnxkitError(f"{partial} exists but {record.name}, which records the input its lines answer, "
                           f"does not (another program, or an interrupted start, wrote it); {fix}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise OnnxkitError(f"{record} is not a record onnxkit predict wrote ({exc}); {fix}") from None
    if not isinstance(was, dict) or was.get("format") != FORMAT:
        raise OnnxkitError(f"{record} is not a record this onnxkit predict wrote; {fix}")
    if (was.get("model"), was.get("model_path")) != (now["model"], now["model_path"]):
        raise OnnxkitError(f"{partial} holds answers from model {was.get('model')!r} ({was.get('model_path')}); "
                           f"this run uses {now['model']!r} ({now['model_path']}): resuming would mix two "
                           f"models' answers; {fix}, or give the same model")
    changed = [key.removeprefix("input_") for key in ("input_bytes", "input_mtime_ns", "input_head_sha256")
               if was.get(key) != now[key]]
    if changed:
        raise OnnxkitError(
            f"{partial} answers {was.get('input')} as it was ({was.get('input_bytes')} bytes); "
            f"{now['input']} is now {now['input_bytes']} bytes and its {', '.join(changed)} changed: resuming "
            f"would mix answers to two different inputs; {fix}, or restore the input"
        )


def _keep_complete_lines(partial: Path) -> Resumed:
    """Counts the partial's complete lines and cuts off whatever follows the last one."""
    lines = ok = 0
    kept = 0  # bytes
    with partial.open("r+b") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break  # torn: the process stopped while writing it
            try:
                good = rendered_ok(raw.decode("utf-8"))
            except (ValueError, RecursionError):  # not a line predict wrote whole (a machine that went down mid-write)
                break
            lines += 1
            ok += good
            kept += len(raw)
        size = f.seek(0, os.SEEK_END)
        if size > kept:
            f.truncate(kept)
            os.fsync(f.fileno())
    return Resumed(lines=lines, ok=ok, failed=lines - ok, dropped_bytes=size - kept)


def _write_record(record: Path, data: dict[str, Any]) -> None:
    tmp = record.with_name(record.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(record)
    _sync_dir(record.parent)


def _sync_dir(folder: Path) -> None:
    # a rename is durable once its folder is synced (POSIX; Windows cannot open a folder, and needs not)
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
