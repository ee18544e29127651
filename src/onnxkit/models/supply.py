"""``pull`` and ``resolve``: turn what a user typed (catalog name, URL, hf:ID, path) into a model.

Everything lands in the cache through ``Cache.building``, so a failed or interrupted pull leaves
no model folder behind, only (for URLs) a partial download that the next pull resumes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from onnxkit.errors import InvalidRequest, MissingDependency, ModelNotFound, SupplyError
from onnxkit.export.card import CARD
from onnxkit.models import catalog
from onnxkit.models.cache import Cache, CachedModel, sha256_file, slug
from onnxkit.models.fetch import (
    ARCHIVE_SUFFIXES,
    check_sha256,
    download,
    extract_archive,
    is_archive,
    url_filename,
)
from onnxkit.models.folder import model_kind

Kind = Literal["catalog", "url", "hub", "name"]
GENAI_CONFIG = "genai_config.json"
# The exporter's task names (in a model card) → what the server does with the model.
HUB_TIMEOUT_S = 5.0


def spec_kind(spec: str) -> Kind:
    if spec.startswith("hf:"):
        return "hub"
    if urlparse(spec).scheme in ("http", "https"):
        return "url"
    if spec in catalog.CATALOG:
        return "catalog"
    return "name"


def _hub_parts(spec: str) -> tuple[str, str]:
    parts = [p for p in spec[3:].split("/") if p]
    if len(parts) < 2 or any(p in (".", "..") for p in parts):
        raise InvalidRequest(f"{spec!r} is not a hub model; expected hf:ORG/NAME or hf:ORG/NAME/SUBFOLDER")
    return "/".join(parts[:2]), "/".join(parts[2:])


def model_name(spec: str, name: str | None = None) -> str:
    """The cache name ``pull(spec, name=name)`` stores its model under."""
    if name:
        return name
    kind = spec_kind(spec)
    if kind == "hub":
        repo, sub = _hub_parts(spec)
        return "-".join([repo.split("/")[1], *sub.split("/")]) if sub else repo.split("/")[1]
    if kind == "url":
        filename = url_filename(spec)
        for suffix in (*ARCHIVE_SUFFIXES, ".onnx"):
            if filename.lower().endswith(suffix):
                filename = filename[: -len(suffix)]
                break
        if not filename:
            raise InvalidRequest(f"URL {spec!r} has no file name to name the model by; pass --name NAME")
        return slug(filename)
    return spec


def pull(
    spec: str,
    cache: Cache,
    *,
    sha256: str | None = None,
    name: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> CachedModel:
    """Make ``spec`` (catalog name, http(s) URL or hf:ORG/NAME[/SUB]) a cached model; return it.

    A model already cached under the same name is returned as is unless ``force``.
    """
    kind = spec_kind(spec)
    if kind == "name":
        raise InvalidRequest(
            f"{spec!r} is not a catalog name, an http(s) URL or hf:ORG/NAME; "
            f"the catalog has {', '.join(sorted(catalog.CATALOG))}"
        )
    if sha256 is not None:
        sha256 = check_sha256(sha256)
        if kind != "url":
            raise InvalidRequest(f"--sha256 checks a downloaded file; {spec!r} is not a URL")
    target = model_name(spec, name)
    cached = cache.get(target)
    if cached is not None and kind == "catalog" and catalog.is_stale(spec, cached.manifest.extra):
        cached = None  # built by an older recipe: build again (the new one replaces it atomically)
    if cached is not None and not force:
        if kind != "catalog" and cached.manifest.source != spec:
            raise SupplyError(
                f"a model named {target!r} is already cached from {cached.manifest.source}, not {spec}; "
                "pass --name to keep both, or --force to replace it"
            )
        recorded = cached.manifest.extra.get("download_sha256")
        if sha256 is not None and recorded != sha256:
            raise SupplyError(
                f"model {target!r} is cached from {cached.manifest.source} with sha256 {recorded}, "
                f"not the expected {sha256}; pass --force to download it again"
            )
        return cached
    if kind == "catalog":
        found = catalog.entry(spec)
        extra = {"catalog": found.name, "description": found.description, "recipe": found.recipe}
        with cache.building(
            target, task=found.task, source=found.source, format=found.format, extra=extra
        ) as out:
            catalog.build(found.name, out, progress=progress)
    elif kind == "url":
        _pull_url(spec, target, cache, sha256, progress)
    else:
        _pull_hub(spec, target, cache)
    pulled = cache.get(target)
    assert pulled is not None  # building() committed it or raised
    return pulled


def _pull_url(url: str, target: str, cache: Cache, sha256: str | None, progress: bool) -> None:
    staging = Path(tempfile.mkdtemp(prefix=".pull-", dir=cache.scratch()))
    try:
        filename = slug(url_filename(url))  # a URL can spell "..": keep the download inside staging
        file = download(
            url,
            staging / "download" / filename,
            sha256=sha256,
            scratch_dir=cache.scratch(),
            progress=progress,
        )
        digest = sha256 or sha256_file(file)
        folder = staging / "model"
        if is_archive(file):
            root = extract_archive(file, folder)
        else:
            _check_onnx(file, url)
            folder.mkdir()
            os.replace(file, folder / "model.onnx")
            root = folder
        extra = {"url": url, "download_sha256": digest}
        _commit(root, target, cache, source=url, extra=extra)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_onnx(file: Path, url: str) -> None:
    import onnx

    try:
        model = onnx.load(str(file), load_external_data=False)
    except Exception as exc:
        raise SupplyError(
            f"{url} is neither an ONNX model nor a .zip/.tar.gz archive ({type(exc).__name__}: {exc}); "
            "expected a .onnx file or an archive of a model folder"
        ) from exc
    if not model.graph.node:
        raise SupplyError(f"{url} parsed as ONNX but has an empty graph; expected a model")


def _commit(root: Path, target: str, cache: Cache, *, source: str, extra: dict[str, Any]) -> None:
    task, fmt, card_task = detect(root)
    if fmt == "onnx" and not any(root.rglob("*.onnx")):
        raise SupplyError(f"{source} holds no .onnx file; expected a model folder with at least one")
    if card_task:
        extra = {**extra, "card_task": card_task}
    with cache.building(target, task=task, source=source, format=fmt, extra=extra) as out:
        for item in root.iterdir():
            os.replace(item, out / item.name)


def detect(folder: Path) -> tuple[str, str, str | None]:
    """(served task, format, the card's own task) for a model folder, by the server's own rule."""
    fmt = "genai" if (folder / GENAI_CONFIG).is_file() else "onnx"
    card_path = folder / CARD
    card_task = None
    if card_path.is_file():
        try:
            card = json.loads(card_path.read_text())
        except ValueError as exc:
            raise SupplyError(
                f"model card {card_path} is not valid JSON ({exc}); expected an object with 'task'"
            ) from exc
        found = card.get("task") if isinstance(card, dict) else None
        card_task = found if isinstance(found, str) and found else None
    if card_task is None and fmt == "onnx" and not (folder / "model.onnx").is_file():
        return "tensor", fmt, None  # an archive's lone .onnx under another name
    return model_kind(folder), fmt, card_task


def _pull_hub(spec: str, target: str, cache: Cache) -> None:
    repo, sub = _hub_parts(spec)
    try:
        import huggingface_hub
        from huggingface_hub.errors import RepositoryNotFoundError
    except ImportError as exc:
        raise MissingDependency("huggingface-hub", "hub") from exc
    fix = (
        f"where the hub is reachable, run `hf download {repo} --local-dir DIR`, copy DIR here and "
        "serve it in place (`onnxkit serve DIR`), or pack it as .tar.gz and `onnxkit pull URL`"
    )
    # Ask once, with a short timeout and no retries, so an unreachable hub fails at once.
    try:
        huggingface_hub.HfApi().repo_info(repo, timeout=HUB_TIMEOUT_S)
    except RepositoryNotFoundError as exc:
        raise SupplyError(
            f"cannot pull {spec}: the Hugging Face hub has no model {repo!r} that you can read "
            "(check the name; for a private or gated repo log in with `hf auth login`)"
        ) from exc
    except Exception as exc:
        raise SupplyError(
            f"cannot pull {spec}: asking the Hugging Face hub about {repo!r} failed "
            f"({type(exc).__name__}: {_first_line(exc)}); {fix}"
        ) from exc
    staging = Path(tempfile.mkdtemp(prefix=".hub-", dir=cache.scratch()))
    try:
        patterns = [f"{sub}/*"] if sub else None
        try:
            huggingface_hub.snapshot_download(
                repo, local_dir=staging, allow_patterns=patterns, etag_timeout=HUB_TIMEOUT_S
            )
        except Exception as exc:
            raise SupplyError(
                f"cannot pull {spec}: downloading {repo!r} failed "
                f"({type(exc).__name__}: {_first_line(exc)}); {fix}"
            ) from exc
        shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping
        root = staging / sub if sub else staging
        if not root.is_dir():
            raise SupplyError(f"cannot pull {spec}: {repo!r} has no folder {sub!r}")
        _commit(root, target, cache, source=spec, extra={"repo": repo, "subfolder": sub})
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"


def resolve(spec: str, cache: Cache) -> CachedModel | Path:
    """What ``onnxkit serve MODEL`` serves for ``spec``.

    URL and hf: specs are pulled if missing; an existing folder or .onnx file is served in place
    (not copied); then a cached name; then a catalog name, built if missing.
    """
    kind = spec_kind(spec)
    if kind in ("url", "hub"):
        return pull(spec, cache)
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        if path.suffix != ".onnx":
            raise InvalidRequest(f"{path} is a file but not a .onnx model; expected a .onnx file or a folder")
        return path
    cached = cache.get(spec)
    if kind == "catalog":  # pull() returns the cached model unless it is an older recipe's build
        return pull(spec, cache)
    if cached is not None:
        return cached
    known = sorted({*catalog.CATALOG, *(m.name for m in cache.list())})
    raise ModelNotFound(
        f"model {spec!r} is not a file, a folder, a cached model or a catalog name; "
        f"known names: {', '.join(known)}; `onnxkit pull URL` adds a model"
    )
