"""``onnxkit pull SPEC...``: put models into the cache (catalog names, URLs, hf:ORG/NAME)."""

from __future__ import annotations

import argparse

from onnxkit.errors import InvalidRequest
from onnxkit.models.cache import Cache
from onnxkit.models.supply import model_name, pull
from onnxkit.settings import DEFAULT_MODELS, default_home


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "pull",
        help="download or build models into the cache",
        description=(
            "Put models into the cache. SPEC is a catalog name (see `onnxkit models --catalog`), "
            "an http(s) URL of a .onnx file or a .zip/.tar.gz model folder, or hf:ORG/NAME[/SUBFOLDER]. "
            f"Without SPEC, pulls the default models ({' '.join(DEFAULT_MODELS)})."
        ),
    )
    p.add_argument("specs", nargs="*", metavar="SPEC", help="what to pull (default: the default models)")
    p.add_argument("--sha256", help="expected sha256 of the downloaded file (URLs only)")
    p.add_argument("--name", help="name in the cache (default: the catalog name, or the URL's file stem)")
    p.add_argument("--force", action="store_true", help="pull again even if the model is cached")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    specs: list[str] = list(args.specs) or list(DEFAULT_MODELS)
    if len(specs) > 1 and (args.sha256 or args.name):
        raise InvalidRequest(f"--sha256 and --name apply to one SPEC; got {len(specs)}: {' '.join(specs)}")
    cache = Cache(default_home())
    for spec in specs:
        name = model_name(spec, args.name)
        before = cache.get(name)
        model = pull(
            spec, cache, sha256=args.sha256, name=args.name, force=args.force, progress=not args.quiet
        )
        # pull() rebuilds a catalog model built by an older recipe: that is no "already cached".
        was_cached = before is not None and before.manifest == model.manifest
        what = f"{model.manifest.task}, {human_size(model.size)}"
        if was_cached:
            print(f"{model.name}: already cached ({what}) at {model.path}; --force pulls it again")
        else:
            print(f"{model.name}: pulled ({what}) into {model.path}")
    return 0


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # unreachable; keeps mypy sure of a return
