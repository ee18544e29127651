"""Model control: what of a repository on disk is loaded in the store, and when (Triton's --model-control-mode).

``sync`` makes the store match the repository (per each model's version policy): new versions
load, removed ones unload, changed ones reload (a failed reload keeps the serving version and
records why). A model whose config is wrong is listed with each version UNAVAILABLE and the
reason; the others load as usual. ``poll`` syncs every few seconds; ``explicit`` syncs only the
model named in a load request (the KServe repository extension); ``none`` syncs once at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxkit.errors import InvalidRequest, ModelNotFound
from onnxkit.models.repository import Entry, ModelControl, RepositoryOptions, scan
from onnxkit.tasks.models import Models, State, version_order

log = logging.getLogger("onnxkit.repository")


@dataclass(frozen=True)
class IndexRow:
    """One row of the KServe repository index."""

    name: str
    state: str
    reason: str = ""
    version: str = ""


@dataclass
class Controller:
    """Started and stopped with the app; the store is the one it loads into."""

    options: RepositoryOptions
    store: Models
    reserved: frozenset[str] = frozenset()  # names of models given directly (MODEL arguments): never replaced
    entries: dict[str, Entry] = field(default_factory=dict)
    unloaded: set[str] = field(default_factory=set)  # explicit mode: known but not loaded
    _loaded_prints: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _poller: asyncio.Task[None] | None = None

    async def _scan(self) -> dict[str, Entry]:
        entries = await asyncio.to_thread(scan, self.options)
        for name in sorted(set(entries) & self.reserved):
            log.warning("model %r in the repository has the name of a model given as MODEL: refusing the "
                        "repository's; rename one of them", name)  # fmt: skip
            del entries[name]
        return entries

    async def start(self) -> None:
        self.entries = await self._scan()
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
        entries = await self._scan()
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
        model = self.store.find(name)
        current = set(model.versions) if model else set()
        for version in sorted(current - set(entry.versions)):
            if (name, version) not in self._loaded_prints:
                continue  # loaded from a MODEL argument, not from the repository: not ours to unload
            log.info("unloading %s version %s (gone from the repository or the version policy)", name, version)
            await self.store.unload(name, version)
            self._loaded_prints.pop((name, version), None)
        jobs = []
        for version, path in entry.versions.items():
            fp = entry.fingerprints.get(version)
            if self._loaded_prints.get((name, version)) == fp:
                continue
            jobs.append(self._load_version(name, version, path, entry, fp))
        await asyncio.gather(*jobs)
        if not entry.versions and entry.error:
            log.error("model %s: %s", name, entry.error)

    async def _load_version(self, name: str, version: str, path: Path, entry: Entry, fp: Any) -> None:
        if entry.config is None:  # the config did not parse: each version is listed with the reason
            loaded = await self.store.mark_unavailable(name, version, path, entry.error)
        else:
            loaded = await self.store.load(name, version, path, entry.config)
        # Remember the fingerprint even on failure: retry only when the files change again.
        self._loaded_prints[(name, version)] = fp
        if loaded.state is State.READY and not loaded.reason:
            log.info("loaded %s version %s from %s", name, version, path)
        else:
            log.error("model %s version %s: %s", name, version, loaded.reason)

    async def _unload_all(self, name: str) -> None:
        if self.store.find(name) is not None:
            log.info("unloading %s", name)
            await self.store.unload(name)
        for key in [k for k in self._loaded_prints if k[0] == name]:
            self._loaded_prints.pop(key)

    # -- KServe repository extension ------------------------------------------------------------------
    def index(self, ready_only: bool = False) -> list[IndexRow]:
        rows: list[IndexRow] = []
        for name in sorted(set(self.entries) | set(self.store.names())):
            model = self.store.find(name)
            if model is None or not model.versions:
                entry = self.entries.get(name)
                reason = "unloaded" if name in self.unloaded else (entry.error if entry else "unloaded")
                if not ready_only:
                    rows.append(IndexRow(name, State.UNAVAILABLE.value, reason))
                continue
            for v in sorted(model.versions.values(), key=lambda v: version_order(v.version)):
                if ready_only and not v.ready:
                    continue
                rows.append(IndexRow(name, v.state.value, v.reason, v.version))
        return rows

    def _check_explicit(self, verb: str) -> None:
        if self.options.control is not ModelControl.EXPLICIT:
            raise InvalidRequest(
                f"cannot {verb} models: model control is {self.options.control.value!r}; "
                "start the server with --model-control explicit"
            )

    async def load(self, name: str) -> None:
        self._check_explicit("load")
        entries = await self._scan()
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
        model = self.store.find(name)
        if model is None or not model.ready:
            reasons = "; ".join(
                f"version {v.version}: {v.reason}" for v in (model.versions.values() if model else [])
            )
            raise InvalidRequest(f"failed to load model {name!r}: {reasons or entry.error or 'no version loaded'}")

    async def unload(self, name: str) -> None:
        self._check_explicit("unload")
        if name not in self.entries and self.store.find(name) is None:
            raise ModelNotFound(f"model {name!r} is not in the model repository")
        async with self._lock:
            await self._unload_all(name)
            self.unloaded.add(name)
