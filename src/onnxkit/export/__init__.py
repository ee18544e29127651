"""Export to ONNX: ``export`` (HF folders, GGUF, catalog names) and ``export_module`` (any torch module).

torch and transformers load lazily, so importing this package stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def export(source: str | Path, task: str, output: str | Path, **options: Any) -> Path:
    from onnxkit.export.api import export as run

    return run(source, task, output, **options)


def export_module(
    module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path | str, **options: Any
) -> Path:
    from onnxkit.export.module import export_module as run

    return run(module, example_inputs, path, **options)


__all__ = ["export", "export_module"]
