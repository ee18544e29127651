"""Getting bytes onto this machine: HTTP(S) downloads that resume, and safe archive extraction.

A download grows a partial file in the cache's scratch folder, named by the URL's sha256, so a
second attempt (in the same call or a later one) continues with a Range request. The partial is
renamed to its destination only when complete (and, with ``sha256``, verified), so nothing half
downloaded is ever taken for a whole file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO
from urllib.parse import unquote, urlparse

import httpx
from tqdm import tqdm

from onnxkit import __version__
from onnxkit.errors import ChecksumMismatch, InvalidRequest, SupplyError
from onnxkit.models.cache import sha256_file

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")
CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class _Interrupted(Exception):
    """The body stopped early; what arrived is kept for the next attempt."""


class _Restart(Exception):
    """The partial file cannot be continued (server ignored Range, or the file changed)."""


def check_sha256(value: str) -> str:
    digest = value.strip().lower().removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise InvalidRequest(f"--sha256 {value!r} is not a sha256 digest; expected 64 hex digits")
    return digest


def partial_path(url: str, scratch_dir: Path) -> Path:
    return scratch_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:32]}.part"


def url_filename(url: str) -> str:
    return unquote(PurePosixPath(urlparse(url).path).name)


def download(
    url: str,
    dest_file: Path,
    *,
    sha256: str | None = None,
    scratch_dir: Path,
    timeout: float = 30.0,
    retries: int = 3,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest_file``, resuming a partial left by an earlier attempt.

    ``retries`` counts attempts after an interrupted body; each one resumes where the last stopped.
    A sha256 mismatch discards the partial (so the next attempt starts clean) and raises.
    """
    expected = check_sha256(sha256) if sha256 else None
    if urlparse(url).scheme not in ("http", "https"):
        raise InvalidRequest(f"URL {url!r} is not http(s)")
    scratch_dir.mkdir(parents=True, exist_ok=True)
    part = partial_path(url, scratch_dir)
    headers = {"User-Agent": f"onnxkit/{__version__}", "Accept-Encoding": "identity"}
    with (
        _locked(part, url),
        httpx.Client(follow_redirects=True, timeout=timeout, headers=headers) as client,
    ):
        failures = restarts = 0
        while True:
            try:
                _attempt(client, url, part, progress)
                break
            except _Restart as exc:
                _discard(part)
                restarts += 1
                if restarts > 2:
                    raise SupplyError(
                        f"{url}: the server's Range answers do not line up with the bytes asked for; "
                        "expected 206 from the requested offset or 200 with the whole file"
                    ) from exc
            except _Interrupted as exc:
                failures += 1
                if failures > retries:
                    raise SupplyError(
                        f"download of {url} was interrupted {failures} times ({exc}); "
                        f"{part.stat().st_size} bytes are kept in {part}: run the same command again "
                        "to resume"
                    ) from exc
        if expected is not None:
            arrived = sha256_file(part)
            if arrived != expected:
                size = part.stat().st_size
                _discard(part)
                raise ChecksumMismatch(
                    f"{url}: sha256 mismatch: expected {expected}, got {arrived} ({size} bytes); "
                    "the download was discarded and nothing was added to the cache. "
                    "Check the --sha256 value and the URL"
                )
        dest_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(part, dest_file)
        _meta(part).unlink(missing_ok=True)
    return dest_file


def _attempt(client: httpx.Client, url: str, part: Path, progress: bool) -> None:
    have = part.stat().st_size if part.exists() else 0
    request_headers: dict[str, str] = {}
    received = 0
    if have:
        request_headers["Range"] = f"bytes={have}-"
        validator = _read_validator(part)
        if validator:
            # If the file changed since the partial was written, the server sends all of it (200).
            request_headers["If-Range"] = validator
    try:
        with client.stream("GET", url, headers=request_headers) as response:
            total = _start(response, url, part, have)
            if response.status_code == 416:
                return  # the partial already holds the whole file
            start = have if response.status_code == 206 else 0
            _write_validator(part, response)
            mode = "ab" if start else "wb"
            with (
                part.open(mode) as sink,
                tqdm(
                    total=total,
                    initial=start,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=url_filename(url) or url,
                    disable=not progress,
                    leave=False,
                ) as bar,
            ):
                # No chunk size: a buffered chunk would be lost when the connection drops.
                for block in response.iter_raw():
                    sink.write(block)
                    received += len(block)
                    bar.update(len(block))
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        if received and isinstance(exc, httpx.TransportError):
            raise _Interrupted(f"{type(exc).__name__}: {exc}") from exc
        raise SupplyError(
            f"cannot download {url}: {type(exc).__name__}: {exc}; check the URL and the network"
        ) from exc
    except OSError as exc:
        raise SupplyError(f"cannot write {part} while downloading {url}: {exc}") from exc
    size = part.stat().st_size
    if total is not None and size != total:
        # A short body without a transport error (e.g. the server closed cleanly): resume next time.
        raise _Interrupted(f"got {size} of {total} bytes")


def _start(response: httpx.Response, url: str, part: Path, have: int) -> int | None:
    """Check the response's status and lengths; return the whole file's size when known."""
    status = response.status_code
    if status == 416 and have:
        # The partial is at least as long as the file: complete if the server says the size matches.
        match = re.fullmatch(r"bytes \*/(\d+)", response.headers.get("Content-Range", ""))
        if match and int(match.group(1)) == have:
            return have
        raise _Restart
    if status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != have:
            raise _Restart
        total = None if match.group(3) == "*" else int(match.group(3))
        length = response.headers.get("Content-Length")
        if length is not None and total is not None and int(length) != total - have:
            raise SupplyError(
                f"{url}: Content-Length {length} does not match Content-Range "
                f"{response.headers['Content-Range']}; the server answered inconsistently"
            )
        return total
    if status == 200:
        length = response.headers.get("Content-Length")
        return int(length) if length is not None else None
    reason = response.reason_phrase or ""
    hint = "check the URL" if status in (401, 403, 404, 410) else "try again later"
    raise SupplyError(f"GET {url} answered {status} {reason}: expected 200 with the file; {hint}")


def _meta(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _read_validator(part: Path) -> str | None:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(_meta(part).read_text())
        value = data.get("validator")
        return value if isinstance(value, str) else None
    return None


def _write_validator(part: Path, response: httpx.Response) -> None:
    etag = response.headers.get("ETag")
    # Weak ETags cannot be used with If-Range; Last-Modified can.
    validator = etag if etag and not etag.startswith("W/") else response.headers.get("Last-Modified")
    _meta(part).write_text(json.dumps({"url": str(response.url), "validator": validator}))


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _meta(part).unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(part: Path, url: str) -> Iterator[None]:
    """Hold an exclusive lock so two pulls of one URL never append to the same partial."""
    try:
        import fcntl
    except ImportError:  # not POSIX: go without
        yield
        return
    lock = part.with_name(part.name + ".lock")
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise SupplyError(f"another onnxkit process is downloading {url}; wait for it to finish") from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            lock.unlink(missing_ok=True)


def is_archive(path: Path) -> bool:
    if path.name.lower().endswith(ARCHIVE_SUFFIXES):
        return True
    return zipfile.is_zipfile(path) or _is_tar(path)


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def extract_archive(archive: Path, dest: Path) -> Path:
    """Extract a .zip or .tar(.gz) model folder into ``dest``; return the model's folder.

    Every member must land inside ``dest``: absolute names, ``..`` and links are refused.
    An archive holding one top-level folder yields that folder.
    """
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                target = _safe_target(dest, info.filename, archive)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    with zf.open(info) as src:
                        _write(src, target)
    elif _is_tar(archive):
        with tarfile.open(archive) as tf:
            for member in tf:
                target = _safe_target(dest, member.name, archive)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    body = tf.extractfile(member)
                    assert body is not None  # regular files always have a body
                    with body:
                        _write(body, target)
                else:
                    raise SupplyError(
                        f"archive {archive.name}: member {member.name!r} is a link or device; "
                        "expected only files and folders"
                    )
    else:
        raise SupplyError(f"{archive.name} is not a .zip or .tar.gz archive")
    entries = [p for p in dest.iterdir() if p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest


def _safe_target(dest: Path, name: str, archive: Path) -> Path:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or re.match(r"^[A-Za-z]:", name):
        raise SupplyError(
            f"archive {archive.name}: member {name!r} points outside the model folder; refusing to extract"
        )
    target = dest.joinpath(*pure.parts)
    if not target.resolve().is_relative_to(dest.resolve()):
        raise SupplyError(
            f"archive {archive.name}: member {name!r} points outside the model folder; refusing to extract"
        )
    return target


def _write(src: IO[bytes], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        shutil.copyfileobj(src, out, CHUNK)
