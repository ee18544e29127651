"""A Triton-layout model repository: files -> entries -> versions in the ModelStore.

Layout: ``DIR/<model>/config.yaml`` (optional) and ``DIR/<model>/<version>/model.onnx``
with integer version folders. ``--config FILE`` adds entries whose ``base_path``
holds the version folders. ``sync`` makes the store match what is on disk (per
the version policy): new versions load, removed ones unload, changed ones
reload (a failed reload keeps the serving version and records why). The poller
calls ``sync`` every few seconds; model control ``explicit`` calls it only for
the model named in a load request.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from onnxkit.errors import InvalidRequest, ModelNotFound, OnnxkitError
from onnxkit.models.config import (
    CONFIG_NAMES,
    ModelConfig,
    VersionPolicy,
    read_config_file,
    read_model_config,
)
from onnxkit.runtime.store import ModelStore, State
from onnxkit.settings import ServerSettings

log = logging.getLogger("onnxkit.repository")

MODEL_MARKERS = ("model.onnx", "genai_config.json", "onnxkit.json")


class ModelControl(str, enum.Enum):
    NONE = "none"  # load everything at start, never change
    POLL = "poll"  # follow the folder
    EXPLICIT = "explicit"  # load/unload on request (KServe repository extension)


@dataclass(frozen=True)
class RepositoryOptions:
    roots: tuple[Path, ...] = ()
    config_files: tuple[Path, ...] = ()
    control: ModelControl = ModelControl.NONE
    poll_seconds: float = 5.0
    # explicit mode: models to load at start (Triton's --load-model); "*" loads all
    load_at_start: tuple[str, ...] = ("*",)


@dataclass(frozen=True)
class Entry:
    name: str
    folder: Path
    config: ModelConfig | None  # None: config did not parse (error says why)
    versions: dict[str, Path]  # selected by the version policy
    fingerprints: dict[str, tuple[Any, ...]]
    error: str = ""


class _AppStateLike(Protocol):
    store: ModelStore
    extras: dict[str, Any]


def _fingerprint(folder: Path, config_mtime: int) -> tuple[Any, ...]:
    # Any file added, removed, rewritten or resized changes it, so a copy in progress reloads once done.
    items: list[tuple[str, int, int]] = []
    for p in sorted(folder.rglob("*")):
        with contextlib.suppress(OSError):
            st = p.stat()
            items.append((str(p.relative_to(folder)), st.st_mtime_ns, st.st_size))
    return (config_mtime, *items)


def _config_mtime(folder: Path) -> int:
    for name in CONFIG_NAMES:
        with contextlib.suppress(OSError):
            return (folder / name).stat().st_mtime_ns
    return 0


def read_entry(name: str, folder: Path, config: ModelConfig | None = None) -> Entry:
    error = ""
    if config is None:
        try:
            config = read_model_config(folder, name)
        except OnnxkitError as exc:
            error = exc.message
    if not folder.is_dir():
        return Entry(name, folder, config, {}, {}, error or f"{folder} is not a folder")
    found = {p.name: p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()}
    if not found and any((folder / m).is_file() for m in MODEL_MARKERS):
        found = {"1": folder}  # a bare model folder serves as version 1
    # A broken config still selects versions (by the default policy) so they are listed with its error.
    selected = (config.version_policy if config else VersionPolicy()).select(list(found))
    versions = {v: found[v] for v in selected}
    if not error and not versions:
        error = (
            f"no version folders in {folder}: expected {folder}/<integer>/model.onnx"
            if not found
            else f"version policy selects none of {sorted(found, key=int)}"
        )
    mtime = _config_mtime(folder)
    prints = {v: _fingerprint(p, mtime) for v, p in versions.items()}
    return Entry(name, folder, config, versions, prints, error)


def scan(options: RepositoryOptions) -> dict[str, Entry]:
    """Every model the options name, read from disk (blocking: call in a thread)."""
    entries: dict[str, Entry] = {}
    for root in options.roots:
        if not root.is_dir():
            log.error("model repository %s is not a folder", root)
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            entries[folder.name] = read_entry(folder.name, folder)
    for path in options.config_files:
        try:
            configs = read_config_file(path)
        except OnnxkitError as exc:
            log.error("%s", exc.message)
            continue
        for cfg in configs:
            assert cfg.base_path is not None
            entries[cfg.name] = read_entry(cfg.name, cfg.base_path, cfg)
    return entries


@dataclass
class Repository:
    """The ``--repository`` / ``--config`` service: started and stopped with the app."""

    options: RepositoryOptions
    store: ModelStore | None = None
    entries: dict[str, Entry] = field(default_factory=dict)
    unloaded: set[str] = field(default_factory=set)  # explicit mode: known but not loaded
    _loaded_prints: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _poller: asyncio.Task[None] | None = None

    async def start(self, state: _AppStateLike) -> None:
        self.store = state.store
        state.extras["repository"] = self
        self.entries = await asyncio.to_thread(scan, self.options)
        wanted = set(self.entries)
        if self.options.control is ModelControl.EXPLICIT and "*" not in self.options.load_at_start:
            wanted &= set(self.options.load_at_start)
        self.unloaded = set(self.entries) - wanted
        async with self._lock:
            await asyncio.gather(*(self._sync_model(n, self.entries[n]) for n in sorted(wanted)))
        if self.options.control is ModelControl.POLL:
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="repository-poller")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    # -- sync ------------------------------------------------------------------------------------------
    async def poll_once(self) -> None:
        entries = await asyncio.to_thread(scan, self.options)
        async with self._lock:
            for name in sorted(set(self.entries) - set(entries)):
                await self._unload_all(name)
            self.entries = entries
            for name in sorted(entries):
                await self._sync_model(name, entries[name])

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.options.poll_seconds)
            try:
                await self.poll_once()
            except Exception:  # the poller must outlive any one bad folder
                log.exception("model repository poll failed")

    async def _sync_model(self, name: str, entry: Entry) -> None:
        store = self._store()
        model = store.find(name)
        current = set(model.versions) if model else set()
        for version in sorted(current - set(entry.versions)):
            if (name, version) not in self._loaded_prints:
                continue  # loaded from a MODEL argument, not from the repository: not ours to unload
            log.info(
                "unloading %s version %s (gone from the repository or the version policy)", name, version
            )
            await store.unload(name, version)
            self._loaded_prints.pop((name, version), None)
        # A broken config still loads nothing, but each version is listed UNAVAILABLE with the reason.
        meta = entry.config.meta() if entry.config else {"config_error": entry.error}
        jobs = []
        for version, path in entry.versions.items():
            fp = entry.fingerprints.get(version)
            if self._loaded_prints.get((name, version)) == fp:
                continue
            jobs.append(self._load_version(name, version, path, meta, fp))
        await asyncio.gather(*jobs)
        if not entry.versions and entry.error:
            log.error("model %s: %s", name, entry.error)

    async def _load_version(self, name: str, version: str, path: Path, meta: dict[str, Any], fp: Any) -> None:
        loaded = await self._store().load(name, version, path, meta)
        # Remember the fingerprint even on failure: retry only when the files change again.
        self._loaded_prints[(name, version)] = fp
        if loaded.state is State.READY and not loaded.reason:
            log.info("loaded %s version %s from %s", name, version, path)
        else:
            log.error("model %s version %s: %s", name, version, loaded.reason)

    async def _unload_all(self, name: str) -> None:
        store = self._store()
        if store.find(name) is not None:
            log.info("unloading %s", name)
            await store.unload(name)
        for key in [k for k in self._loaded_prints if k[0] == name]:
            self._loaded_prints.pop(key)

    def _store(self) -> ModelStore:
        assert self.store is not None, "Repository.start was not called"
        return self.store

    # -- KServe repository extension ------------------------------------------------------------------
    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        store = self._store()
        rows: list[dict[str, str]] = []
        for name in sorted(set(self.entries) | set(store.names())):
            model = store.find(name)
            if model is None or not model.versions:
                entry = self.entries.get(name)
                reason = "unloaded" if name in self.unloaded else (entry.error if entry else "unloaded")
                if not ready_only:
                    rows.append({"name": name, "state": State.UNAVAILABLE.value, "reason": reason})
                continue
            for v in sorted(
                model.versions.values(), key=lambda v: int(v.version) if v.version.isdigit() else -1
            ):
                if ready_only and not v.ready:
                    continue
                rows.append({"name": name, "version": v.version, "state": v.state.value, "reason": v.reason})
        return rows

    def _check_explicit(self, verb: str) -> None:
        if self.options.control is not ModelControl.EXPLICIT:
            raise InvalidRequest(
                f"cannot {verb} models: model control is {self.options.control.value!r}; "
                "start the server with --model-control explicit"
            )

    async def load(self, name: str) -> None:
        self._check_explicit("load")
        entries = await asyncio.to_thread(scan, self.options)
        entry = entries.get(name)
        if entry is None:
            known = ", ".join(sorted(entries)) or "none"
            raise ModelNotFound(f"model {name!r} is not in the model repository; models there: {known}")
        async with self._lock:
            self.entries[name] = entry
            self.unloaded.discard(name)
            # A load request reloads even unchanged files (Triton does the same).
            for key in [k for k in self._loaded_prints if k[0] == name]:
                self._loaded_prints.pop(key)
            await self._sync_model(name, entry)
        model = self._store().find(name)
        if model is None or not model.ready:
            reasons = "; ".join(
                f"version {v.version}: {v.reason}" for v in (model.versions.values() if model else [])
            )
            raise InvalidRequest(
                f"failed to load model {name!r}: {reasons or entry.error or 'no version loaded'}"
            )

    async def unload(self, name: str) -> None:
        self._check_explicit("unload")
        store = self._store()
        if name not in self.entries and store.find(name) is None:
            raise ModelNotFound(f"model {name!r} is not in the model repository")
        async with self._lock:
            await self._unload_all(name)
            self.unloaded.add(name)


def options_from(settings: ServerSettings) -> RepositoryOptions:
    return repository_options(
        settings.repositories,
        settings.model_config_files,
        settings.model_control,
        settings.repository_poll_seconds,
        settings.load_models,
    )


def repository_options(
    roots: Sequence[str | Path] = (),
    config_files: Sequence[str | Path] = (),
    control: str = "none",
    poll_seconds: float = 5.0,
    load_at_start: Sequence[str] = ("*",),
) -> RepositoryOptions:
    try:
        mode = ModelControl(control)
    except ValueError as exc:
        raise InvalidRequest(f"--model-control is {control!r}; expected poll, explicit or none") from exc
    return RepositoryOptions(
        roots=tuple(Path(r).expanduser() for r in roots),
        config_files=tuple(Path(c).expanduser() for c in config_files),
        control=mode,
        poll_seconds=poll_seconds,
        load_at_start=tuple(load_at_start) or ("*",),
    )
