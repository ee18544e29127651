"""A Triton-layout model repository on disk: files -> entries (name, config, selected versions).

Layout: ``DIR/<model>/config.yaml`` (optional) and ``DIR/<model>/<version>/model.onnx``
with integer version folders. ``--config FILE`` adds entries whose ``base_path``
holds the version folders. What is loaded from the entries, and when, is
``tasks/control``'s job.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxkit.errors import InvalidRequest, OnnxkitError
from onnxkit.models.config import (
    CONFIG_NAMES,
    ModelConfig,
    VersionPolicy,
    read_config_file,
    read_model_config,
)
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
            if _claimed(entries, folder.name, folder):
                entries[folder.name] = read_entry(folder.name, folder)
    for path in options.config_files:
        try:
            configs = read_config_file(path)
        except OnnxkitError as exc:
            log.error("%s", exc.message)
            continue
        for cfg in configs:
            assert cfg.base_path is not None
            if _claimed(entries, cfg.name, cfg.base_path):
                entries[cfg.name] = read_entry(cfg.name, cfg.base_path, cfg)
    return entries


def _claimed(entries: dict[str, Entry], name: str, folder: Path) -> bool:
    """Whether ``name`` is still free; two models of one name are never merged or silently replaced."""
    if name in entries:
        log.warning(
            "model %r in %s has the name of the model in %s: serving that one and refusing this one; rename "
            "one of them", name, folder, entries[name].folder,
        )  # fmt: skip
        return False
    return True


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
