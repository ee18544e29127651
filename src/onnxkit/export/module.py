"""Any torch module → a checked ONNX file, verified against the module itself."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from onnxkit.errors import InvalidRequest
from onnxkit.export.verify import ParityError, assert_close, check_graph, max_diffs
from onnxkit.types import Array

DEFAULT_OPSET = 17
TWO_GB = 2 * 1024**3
DATA_SUFFIX = ".data"


def write_graph(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    opset: int,
) -> None:
    """torch.onnx.export (TorchScript tracer), then re-saved with external data when over 2 GB."""
    module.eval()
    with tempfile.TemporaryDirectory(prefix="onnxkit-trace-", dir=path.parent) as tmp:
        raw = Path(tmp) / "model.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            # The tracer warns about every data-dependent Python branch; parity checks decide.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                str(raw),
                dynamo=False,
                opset_version=opset,
                do_constant_folding=True,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
            )
        model = onnx.load(str(raw), load_external_data=True)
        onnx.helper.set_model_props(model, {"exported_by": "onnxkit"})
        _pin_static_output_dims(model, module, args, output_names, dynamic_axes)
        large = sum(p.stat().st_size for p in Path(tmp).iterdir()) > TWO_GB
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=large,
            all_tensors_to_one_file=True,
            location=path.name + DATA_SUFFIX,
            size_threshold=1024,
        )


def _pin_static_output_dims(
    model: onnx.ModelProto,
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
) -> None:
    """The tracer names every computed dim (e.g. 'Divembeddings_dim_1'); a dim not declared
    dynamic is static, so write the traced size instead, as readers of the graph expect."""
    with torch.no_grad():
        out = module(*args)
    outs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
    shapes = {n: tuple(t.shape) for n, t in zip(output_names, outs, strict=True)}
    for value in model.graph.output:
        shape = shapes.get(value.name)
        dims = value.type.tensor_type.shape.dim
        if shape is None or len(dims) != len(shape):
            continue
        declared = dynamic_axes.get(value.name, {})
        for i, dim in enumerate(dims):
            if i in declared:
                dim.dim_param = declared[i]
            else:
                dim.dim_value = int(shape[i])


def session(path: Path, options: ort.SessionOptions | None = None) -> ort.InferenceSession:
    opts = options or ort.SessionOptions()
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_onnx(sess: ort.InferenceSession, feeds: Mapping[str, Array]) -> dict[str, Array]:
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, dict(feeds)), strict=True))


def run_torch(module: torch.nn.Module, feeds: Mapping[str, Array], names: Sequence[str]) -> dict[str, Array]:
    with torch.no_grad():
        out = module(*(torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()))
    outs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
    return {n: t.detach().cpu().numpy() for n, t in zip(names, outs, strict=True)}


def _resized(example: Array, axes: Mapping[int, str], grow: int, rng: np.random.Generator) -> Array:
    shape = [d + grow if i in axes else d for i, d in enumerate(example.shape)]
    if np.issubdtype(example.dtype, np.integer):
        high = max(int(example.max()) + 1, 1) if example.size else 1
        return rng.integers(0, high, size=shape).astype(example.dtype)
    if example.dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    return rng.standard_normal(size=shape).astype(example.dtype)


def export_module(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: Path | str,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    opset: int = DEFAULT_OPSET,
    atol: float = 1e-4,
) -> Path:
    """Export ``module`` to ``path``; check it and compare with the module on the example and on
    random inputs whose dynamic axes have other sizes. On failure nothing is left at ``path``."""
    path = Path(path)
    if len(example_inputs) != len(input_names):
        raise InvalidRequest(
            f"export_module got {len(example_inputs)} example inputs but {len(input_names)} input_names"
        )
    axes = dict(dynamic_axes or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".onnxkit-", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        write_graph(module, tuple(example_inputs), staged, input_names, output_names, axes, opset)
        check_graph(staged)
        sess = session(staged)
        examples = {n: t.detach().cpu().numpy() for n, t in zip(input_names, example_inputs, strict=True)}
        rng = np.random.default_rng(0)
        grown = {n: _resized(a, axes.get(n, {}), 3, rng) for n, a in examples.items()}
        for what, feeds in (("the example inputs", examples), ("random inputs of other sizes", grown)):
            want = run_torch(module, feeds, output_names)
            try:
                got = run_onnx(sess, feeds)
            except Exception as exc:  # onnxruntime raises its own (non-exported) error classes
                raise ParityError(
                    f"the exported graph fails on {what} ({exc}); the trace probably baked in a size "
                    "that should be dynamic: check dynamic_axes and shape arithmetic in forward()"
                ) from exc
            assert_close(max_diffs(want, got), atol, what)
        del sess
        for item in Path(tmp).iterdir():
            shutil.move(str(item), str(path.parent / item.name))
    return path
