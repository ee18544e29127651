"""How model files reach the Ray nodes: a shared path, or a copy through Ray's object store.

The driver pulls every model into its cache first, then ``ship`` lists each model's files with their
sha256 and, unless the mode is ``path``, puts the bytes into the object store once. On each node a
replica (or predict actor) calls ``land``: when the same path holds the same files there (one
machine, or a shared file system such as NFS or a Kubernetes volume) it is used as it is; otherwise
the files come out of the object store into ``$ONNXKIT_HOME/ray-models/<name>-<digest>/`` on that
node, checked against the driver's sha256 and renamed into place, so the replicas of one node share
one copy and a replaced replica finds it there.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxkit.errors import InvalidRequest, OnnxkitError
from onnxkit.models.cache import sha256_file, slug

MODES = ("auto", "object-store", "path")
COMPLETE = ".onnxkit-complete"


@dataclass(frozen=True)
class Shipment:
    """One model file or folder, as the driver saw it."""

    name: str
    path: str  # on the driver's machine
    is_file: bool
    files: tuple[tuple[str, str], ...]  # (path relative to ``path``'s folder, sha256)
    blob: Any = None  # a Ray ObjectRef of {relative path: bytes}, or None in "path" mode
    mode: str = "auto"

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for rel, sha in self.files:
            h.update(f"{rel}\0{sha}\n".encode())
        return h.hexdigest()


def _listing(path: Path) -> list[tuple[str, Path]]:
    if path.is_file():
        return [(path.name, path)]
    return sorted((str(p.relative_to(path)), p) for p in path.rglob("*") if p.is_file())


def ship(name: str, path: Path, mode: str = "auto") -> Shipment:
    """On the driver: list (and, unless ``mode`` is ``path``, upload) one model's files."""
    if mode not in MODES:
        raise InvalidRequest(f"model transfer mode {mode!r} is unknown; expected one of {', '.join(MODES)}")
    if not path.exists():
        raise InvalidRequest(f"model {name!r}: {path} does not exist")
    listing = _listing(path)
    files = tuple((rel, sha256_file(p)) for rel, p in listing)
    blob = None
    if mode != "path":
        import ray

        blob = ray.put({rel: p.read_bytes() for rel, p in listing})
    return Shipment(name=name, path=str(path), is_file=path.is_file(), files=files, blob=blob, mode=mode)


def _matches(path: Path, shipment: Shipment) -> bool:
    folder = path.parent if shipment.is_file else path
    if not path.exists():
        return False
    # the same relative paths with the same bytes; extra files in a folder are fine
    return all((folder / rel).is_file() and sha256_file(folder / rel) == sha for rel, sha in shipment.files)


def land(shipment: Shipment, home: Path) -> Path:
    """On a node: a local path holding exactly the driver's files for this model."""
    driver_path = Path(shipment.path)
    if shipment.mode != "object-store" and _matches(driver_path, shipment):
        return driver_path
    if shipment.blob is None:
        raise OnnxkitError(
            f"model {shipment.name!r}: {driver_path} is missing on this node or differs from the driver's copy; "
            "with model transfer 'path' every node must hold the same files at the same path (a shared "
            "file system), or use 'auto' to copy them through Ray's object store"
        )
    target = home / "ray-models" / f"{slug(shipment.name)}-{shipment.digest[:16]}"
    if not (target / COMPLETE).is_file():
        _unpack(shipment, target)
    return target / driver_path.name if shipment.is_file else target


def _unpack(shipment: Shipment, target: Path) -> None:
    import ray

    data: dict[str, bytes] = ray.get(shipment.blob)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for rel, sha in shipment.files:
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data[rel])
            if sha256_file(dest) != sha:
                raise OnnxkitError(f"model {shipment.name!r}: {rel} arrived from the object store with a "
                                   "different sha256 than the driver's; nothing was kept")
        (tmp / COMPLETE).write_text(shipment.digest)
        try:
            os.rename(tmp, target)
        except OSError:
            # another replica on this node landed the same files first: theirs are identical
            if not (target / COMPLETE).is_file():
                raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
