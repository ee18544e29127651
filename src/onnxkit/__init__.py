"""onnxkit: export, check, optimise and serve ONNX models."""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onnxkit.serve.server import Server


def __getattr__(name: str) -> Any:
    # Imported lazily: `import onnxkit` stays cheap and never pulls in the server stack.
    if name == "Server":
        from onnxkit.serve.server import Server

        return Server
    raise AttributeError(name)


__all__ = ["Server", "__version__"]
