"""Real English sentences of varied length for benchmarks: taken from the standard library's docstrings."""

from __future__ import annotations

import importlib
import re

MODULES = ("argparse", "asyncio", "collections", "csv", "datetime", "decimal", "email", "functools", "http.client",
           "inspect", "json", "logging", "os", "pathlib", "pickle", "random", "re", "shutil", "socket", "sqlite3",
           "statistics", "string", "subprocess", "tarfile", "textwrap", "threading", "unittest", "urllib.request",
           "uuid", "zipfile", "typing", "dataclasses", "enum", "heapq", "itertools", "tempfile", "difflib")


def sentences(n: int = 512) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for name in MODULES:
        module = importlib.import_module(name)
        docs = [module.__doc__ or ""]
        docs += [getattr(getattr(module, a), "__doc__", "") or "" for a in sorted(dir(module)) if not a.startswith("_")]
        for doc in docs:
            for s in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                words = s.split()
                if 4 <= len(words) <= 80 and s not in seen and s[0].isupper():
                    seen.add(s)
                    out.append(s)
                    if len(out) == n:
                        return out
    return out
