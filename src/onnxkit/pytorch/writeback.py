"""Write a tuned module's parameters back into the ONNX file it came from.

Only initializer payloads change: the graph, the other initializers and the storage layout (inline
or external data, offsets and lengths) stay as they were. External data is patched in place in a
copy of the data file, so a 2 GB model does not pass through protobuf.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import onnx
import torch
from torch import Tensor

from onnxkit.errors import InvalidRequest
from onnxkit.pytorch.graph import weight_names
from onnxkit.pytorch.module import OnnxModule
from onnxkit.pytorch.ops_tensor import DTYPES


class WeightMismatch(InvalidRequest):
    pass


def _payload(value: Tensor, proto: onnx.TensorProto) -> bytes:
    dtype = DTYPES[proto.data_type]
    t = value.detach().to(device="cpu", dtype=dtype).contiguous()
    if dtype == torch.bfloat16:
        return t.view(torch.uint16).numpy().astype("<u2").tobytes()
    arr = t.numpy()
    return arr.astype(arr.dtype.newbyteorder("<")).tobytes()  # ONNX raw data is little-endian


def _external(proto: onnx.TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in proto.external_data}


def _check(module: OnnxModule, model: onnx.ModelProto, src: Path) -> dict[str, Tensor]:
    inits = {i.name: i for i in model.graph.initializer}
    params: dict[str, Tensor] = {
        module.initializer_names[a]: p for a, p in module.named_parameters() if a in module.initializer_names
    }
    unknown = sorted(set(params) - set(inits))
    if unknown:
        raise WeightMismatch(
            f"{src} has no initializer(s) {unknown[:5]} that the module holds: "
            "was the module loaded from another model?"
        )
    expected = weight_names(model.graph)  # the importer's rule, read without loading the data
    lacking = sorted(expected - set(params))
    if lacking:
        raise WeightMismatch(
            f"{src} has trainable initializer(s) {lacking[:5]} that the module lacks: "
            "was the module loaded from another model?"
        )
    for name, value in params.items():
        want = list(inits[name].dims)
        if list(value.shape) != want:
            raise WeightMismatch(
                f"parameter for initializer {name!r} has shape {list(value.shape)}; {src} expects {want}"
            )
    return params


def save(module: OnnxModule, src: str | Path, dst: str | Path) -> Path:
    """Copy ``module``'s parameters into the initializers of ``src`` (by name) and write ``dst``."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise InvalidRequest(f"source ONNX model {str(src)!r} does not exist")
    model = onnx.load(str(src), load_external_data=False)
    inits = {i.name: i for i in model.graph.initializer}
    params = _check(module, model, src)

    external = [p for p in inits.values() if p.data_location == onnx.TensorProto.EXTERNAL]
    locations = sorted({_external(p)["location"] for p in external})
    renamed: dict[str, str] = {}
    if dst.parent.resolve() == src.parent.resolve() and dst.resolve() != src.resolve():
        # Beside the source, the copy must not overwrite the source's data file: give it dst's name.
        renamed = {loc: f"{dst.name}.data" if i == 0 else f"{dst.name}.{i}.data" for i, loc in enumerate(locations)}
    patches: dict[str, list[tuple[int, bytes]]] = {loc: [] for loc in locations}
    for name, value in params.items():
        proto = inits[name]
        data = _payload(value, proto)
        if proto.data_location == onnx.TensorProto.EXTERNAL:
            info = _external(proto)
            length = int(info.get("length", len(data)))
            if length != len(data):
                raise WeightMismatch(
                    f"initializer {name!r} stores {length} bytes externally; the parameter has {len(data)}"
                )
            patches[info["location"]].append((int(info.get("offset", 0)), data))
        elif proto.raw_data:
            proto.raw_data = data
        else:
            _typed(proto, value)
    for proto in external:
        for entry in proto.external_data:
            if entry.key == "location" and entry.value in renamed:
                entry.value = renamed[entry.value]

    dst.parent.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for location, writes in patches.items():
            fd, name = tempfile.mkstemp(prefix=".onnxkit-", dir=dst.parent)
            os.close(fd)
            staged.append((Path(name), dst.parent / renamed.get(location, location)))
            shutil.copyfile(src.parent / location, name)
            with open(name, "r+b") as f:
                for offset, data in writes:
                    f.seek(offset)
                    f.write(data)
        fd, name = tempfile.mkstemp(prefix=".onnxkit-", dir=dst.parent)
        os.close(fd)
        staged.append((Path(name), dst))
        Path(name).write_bytes(model.SerializeToString())
        for tmp, final in staged:  # the graph goes last: it must never point at data not yet in place
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    return dst


def _typed(proto: onnx.TensorProto, value: Tensor) -> None:
    """Values kept in the typed repeated fields (rare; hand-built graphs) are rewritten there."""
    t = value.detach().to(device="cpu", dtype=DTYPES[proto.data_type]).reshape(-1)
    if proto.data_type == onnx.TensorProto.FLOAT:
        del proto.float_data[:]
        proto.float_data.extend(t.tolist())
    elif proto.data_type == onnx.TensorProto.DOUBLE:
        del proto.double_data[:]
        proto.double_data.extend(t.tolist())
    else:  # float16 / bfloat16 bits live in int32_data
        del proto.int32_data[:]
        proto.int32_data.extend(t.view(torch.uint16).to(torch.int32).tolist())
