"""``export()``: the Python face of ``onnxkit export``; resolve, build in a staging folder, publish."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from onnxkit.errors import InvalidRequest
from onnxkit.export import sources
from onnxkit.export.card import graph_io, versions, write_card
from onnxkit.export.causal_lm import export_causal_lm
from onnxkit.export.module import DEFAULT_OPSET
from onnxkit.export.tasks import ALL_TASKS, spec_for
from onnxkit.export.transformer import export_transformer
from onnxkit.types import JSON

QUANTIZE = ("int8", "int4")


def _say(message: str) -> None:
    print(f"[onnxkit export] {message}", file=sys.stderr, flush=True)


def _validate(task: str, quantize: str | None, fuse_tokenizer: bool, optimize: bool) -> None:
    if task not in ALL_TASKS:
        raise InvalidRequest(f"task {task!r} is not supported; expected one of {', '.join(ALL_TASKS)}")
    if quantize is not None and quantize not in QUANTIZE:
        raise InvalidRequest(f"--quantize {quantize!r} is not supported; expected int8 or int4")
    if task == "causal-lm":
        if quantize == "int8":
            raise InvalidRequest("causal-lm supports --quantize int4 (MatMulNBits) or none (fp32), not int8")
        if fuse_tokenizer or optimize:
            raise InvalidRequest(
                "causal-lm builds an onnxruntime-genai folder: the builder already fuses and "
                "onnxruntime-genai tokenizes; drop --optimize/--fuse-tokenizer"
            )
    elif quantize == "int4":
        raise InvalidRequest(f"--quantize int4 is for causal-lm; for task {task!r} use --quantize int8")


def _publish(staging: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in sorted(staging.iterdir()):
        os.replace(item, out_dir / item.name)


def export(
    source: str | Path,
    task: str,
    output: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    quantize: str | None = None,
    optimize: bool = False,
    fuse_tokenizer: bool = False,
    atol: float = 1e-4,
    pooling: str | None = None,
    max_length: int | None = None,
    requantize: str | None = None,
) -> Path:
    """Export SOURCE (HF folder, .gguf, hf:ORG/NAME or a catalog name) for ``task`` into ``output``.

    A GGUF source (causal-lm) keeps its own quantized blocks unless ``requantize="int4"``.

    Returns ``output``. Nothing is written there unless every check passes.
    """
    _validate(task, quantize, fuse_tokenizer, optimize)
    if requantize is not None and task != "causal-lm":
        raise InvalidRequest(f"--requantize is for GGUF sources with --task causal-lm, not {task!r}")
    out_dir = Path(output).expanduser()
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InvalidRequest(f"output folder {out_dir} is not empty; remove it or pass another -o")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}-", dir=out_dir.parent) as tmp:
        scratch, staging = Path(tmp) / "scratch", Path(tmp) / "staging"
        scratch.mkdir()
        staging.mkdir()
        src = sources.resolve(str(source), scratch)
        if task == "causal-lm":
            card: JSON = export_causal_lm(
                src.path, src.kind, src.label, scratch, staging,
                quantize=quantize, requantize=requantize, max_length=max_length,
            )
        else:
            if src.kind == "gguf":
                raise InvalidRequest(f"a GGUF source only works with --task causal-lm, not {task!r}")
            fields = export_transformer(
                src.path, staging, task, opset=opset, atol=atol, pooling=pooling, max_length=max_length
            )
            card = {"task": task, "source": src.label, "format": "onnx", "opset": opset, **fields}
            card["fused_tokenizer"] = False
            model = staging / "model.onnx"
            if optimize or quantize:
                from onnxkit.export.quantize import shrink

                card["optimization"] = shrink(
                    model, src.path, spec_for(task), quantize=quantize, optimize=optimize
                )
            if fuse_tokenizer:
                from onnxkit.export.fuse import fuse_into

                card["fused_tokenizer"] = True
                card["fusion"] = fuse_into(model, staging, int(card["max_length"]))
            card["inputs"], card["outputs"] = graph_io(model)
        card["versions"] = versions()
        card["export_seconds"] = round(time.monotonic() - started, 1)
        write_card(staging, card)
        _publish(staging, out_dir)
    _say(f"wrote {out_dir} in {time.monotonic() - started:.1f} s")
    return out_dir
