"""``onnxkit models``: what is in the cache (or, with --catalog, what `onnxkit pull` can build)."""

from __future__ import annotations

import argparse
import json

from onnxkit.commands.pull import human_size
from onnxkit.models.cache import Cache
from onnxkit.models.catalog import CATALOG
from onnxkit.settings import default_home
from onnxkit.types import JSON


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", help="list cached models", description="List the models in the cache.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--catalog", action="store_true", help="list the built-in catalog instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cache = Cache(default_home())
    rows = _catalog_rows(cache) if args.catalog else _cache_rows(cache)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no models in {cache.root}; `onnxkit pull NAME|URL` adds one (`onnxkit models --catalog`)")
        return 0
    columns = (
        ("name", "task", "cached", "description") if args.catalog else ("name", "task", "size", "source")
    )
    table = [[c.upper() for c in columns]]
    for row in rows:
        cells = [str(row[c]) for c in columns]
        if not args.catalog:
            cells[2] = human_size(int(row["size"]))
        else:
            cells[2] = "yes" if row["cached"] else "no"
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    for r in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _cache_rows(cache: Cache) -> list[JSON]:
    return [
        {
            "name": m.name,
            "task": m.manifest.task,
            "format": m.manifest.format,
            "size": m.size,
            "source": m.manifest.source,
            "created": m.manifest.created,
            "path": str(m.path),
        }
        for m in cache.list()
    ]


def _catalog_rows(cache: Cache) -> list[JSON]:
    return [
        {
            "name": e.name,
            "task": e.task,
            "format": e.format,
            "cached": cache.get(e.name) is not None,
            "source": e.source,
            "description": e.description,
        }
        for e in CATALOG.values()
    ]
