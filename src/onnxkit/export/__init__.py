"""Export to ONNX: ``export`` (HF folders, GGUF, catalog names) and ``export_module`` (any torch module).

``onnxkit.export(...)`` and ``onnxkit.export_module(...)`` are the same two functions: this package
is callable, so ``onnxkit.export`` works as a function whether or not one of its submodules has
been imported (an import binds the package itself to that name on ``onnxkit``).
torch and transformers load lazily, so importing this package stays cheap.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def export(source: str | Path, task: str, output: str | Path, **options: Any) -> Path:
    """Export SOURCE (HF folder, .gguf, hf:ORG/NAME or a catalog name) for ``task`` into ``output``;
    see ``onnxkit.export.api.export`` for the options. Nothing is written unless every check passes."""
    from onnxkit.export.api import export as run

    return run(source, task, output, **options)


def export_module(
    module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path | str, **options: Any
) -> Path:
    """Export any torch module to ``path``, checked against the module on the example inputs and on
    inputs of other sizes; see ``onnxkit.export.module.export_module`` for the options."""
    from onnxkit.export.module import export_module as run

    return run(module, example_inputs, path, **options)


class _CallablePackage(types.ModuleType):
    def __call__(self, source: str | Path, task: str, output: str | Path, **options: Any) -> Path:
        return export(source, task, output, **options)


sys.modules[__name__].__class__ = _CallablePackage

__all__ = ["export", "export_module"]
