"""onnxkit: export, check, optimise and serve ONNX models."""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onnxkit.export import export, export_module
    from onnxkit.serve.server import Server


def __getattr__(name: str) -> Any:
    # Imported lazily: `import onnxkit` stays cheap and never pulls in the server stack or torch.
    if name == "Server":
        from onnxkit.serve.server import Server

        return Server
    if name in ("export", "export_module"):
        # onnxkit.export is a package that can be called like its export() function: once any of
        # its submodules is imported, Python binds that package to `onnxkit.export`, so the
        # package itself is what this name must be for `onnxkit.export(...)` to always work.
        import onnxkit.export as package

        return package if name == "export" else package.export_module
    raise AttributeError(f"module 'onnxkit' has no attribute {name!r}")


__all__ = ["Server", "__version__", "export", "export_module"]
