"""The model cache: one folder per model, each with a manifest.

Writes are atomic: a model is built in a temporary folder beside the cache's
folders and renamed into place only once complete, with its manifest written
last inside the temporary folder. A folder without a manifest is never listed
or served, so an interrupted pull or export leaves nothing that looks usable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from onnxkit.errors import SupplyError

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    name: str
    task: str
    source: str
    files: dict[str, str]  # relative path -> sha256
    created: str
    format: str = "onnx"  # "onnx" (onnxruntime) or "genai" (onnxruntime-genai folder)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        data = json.loads((folder / MANIFEST).read_text())
        return cls(**data)


@dataclass(frozen=True)
class CachedModel:
    path: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def size(self) -> int:
        return sum((self.path / f).stat().st_size for f in self.manifest.files)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def slug(name: str) -> str:
    keep = [c if c.isalnum() or c in "-_." else "-" for c in name]
    return "".join(keep).strip("-.") or "model"


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        return self.root / "models" / slug(name)

    def get(self, name: str) -> CachedModel | None:
        folder = self.path(name)
        if not (folder / MANIFEST).is_file():
            return None
        return CachedModel(folder, Manifest.read(folder))

    def list(self) -> list[CachedModel]:
        base = self.root / "models"
        if not base.is_dir():
            return []
        found = []
        for folder in sorted(base.iterdir()):
            if (folder / MANIFEST).is_file():
                found.append(CachedModel(folder, Manifest.read(folder)))
        return found

    def scratch(self) -> Path:
        """A folder on the cache's file system for partial downloads and builds."""
        path = self.root / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextlib.contextmanager
    def building(
        self,
        name: str,
        *,
        task: str,
        source: str,
        format: str = "onnx",
        extra: dict[str, Any] | None = None,
    ) -> Iterator[Path]:
        """Yield an empty folder to build ``name`` in; commit it atomically on success."""
        tmp = Path(tempfile.mkdtemp(prefix=f".{slug(name)}-", dir=self.scratch()))
        try:
            yield tmp
            files = {
                str(p.relative_to(tmp)): sha256_file(p)
                for p in sorted(tmp.rglob("*"))
                if p.is_file() and p.name != MANIFEST
            }
            if not files:
                raise SupplyError(f"building model {name!r} produced no files")
            manifest = Manifest(
                name=name,
                task=task,
                source=source,
                files=files,
                created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                format=format,
                extra=extra or {},
            )
            (tmp / MANIFEST).write_text(manifest.to_json())
            final = self.path(name)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                # Replace: move the old one aside first so that a crash leaves one or the other.
                old = final.with_name(f".{final.name}.old-{os.getpid()}")
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def remove(self, name: str) -> bool:
        folder = self.path(name)
        if not folder.exists():
            return False
        shutil.rmtree(folder)
        return True
