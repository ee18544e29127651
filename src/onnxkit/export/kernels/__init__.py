"""onnxkit's own onnxruntime operator, BlockMatMul: a GGUF's quantized blocks times float32 activations.

onnxruntime's MatMulNBits multiplies 4-bit blocks fast only with int8 activations (accuracy_level
4); with float32 activations (level 0) it runs about 2.5× slower on this CPU, and it has no 8-bit
float kernel at all. BlockMatMul (``blockmatmul.c``) keeps activations in float32 and reads the
GGUF's codes, scales and mins as they are, in one pass: 4-bit codes through a 16-entry table,
8-bit codes as signed bytes, the min's share as ``offset · Σ a`` per block.

The library is C compiled on first use with the system's C compiler (``$CC`` or ``cc``) into
``$ONNXKIT_HOME/kernels/<source hash>/``, and copied into each model folder that uses it, where
onnxruntime-genai's ``custom_ops_library`` finds it. ``library()`` is None where it cannot be
built; callers then keep MatMulNBits. The record layout is ``blockmatmul.h``'s; ``pack`` writes it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import onnx

from onnxkit.settings import default_home
from onnxkit.types import Array

DOMAIN = "onnxkit"
OP = "BlockMatMul"
LIBRARY = "libonnxkit_kernels.so"
SOURCES = ("blockmatmul.h", "blockmatmul.c", "ortops.c")
_FLAGS = ("-O3", "-std=gnu11", "-shared", "-fPIC", "-fvisibility=hidden", "-pthread")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Packed:
    """A matrix in BlockMatMul's records, and the node attributes describing them."""

    data: Array  # uint8, flat
    n: int
    k: int
    block: int
    bits: int
    scale_bits: int
    has_offset: bool
    zero_point: int

    def attributes(self) -> dict[str, int]:
        return {
            "N": self.n, "K": self.k, "block_size": self.block, "bits": self.bits,
            "scale_bits": self.scale_bits, "has_offset": int(self.has_offset), "zero_point": self.zero_point,
        }


def _fits_fp16(values: Array) -> bool:
    with np.errstate(over="ignore"):
        return bool(np.all(values.astype(np.float16).astype(np.float32) == values))


def pack(q: Array, scale: Array, zero_point: int, offset: Array | None, bits: int) -> Packed:
    """``scale · (q − zero_point) + offset`` per block of a row → BlockMatMul records (blockmatmul.h).

    q: uint8 [n, k]; scale: float32 [n, k // block]; offset: float32 like scale, or None. 8-bit codes
    are stored centred (q − zero_point must fit int8); scales and offsets as fp16 when every one of
    them is an fp16 value (GGUF's d and m are), else fp32.
    """
    n, k = q.shape
    blocks = scale.shape[1]
    block = k // blocks
    if block not in (16, 32) or block * blocks != k:
        raise ValueError(f"blocks of {k}/{blocks} columns; BlockMatMul takes blocks of 16 or 32")
    if offset is not None and offset.shape != scale.shape:
        raise ValueError(f"offsets {offset.shape} do not match scales {scale.shape}")
    groups = -(-n // 16)
    pad = groups * 16 - n
    if bits == 4:
        if int(q.max(initial=0)) > 15 or not 0 <= zero_point <= 15:
            raise ValueError("4-bit codes and zero point must lie in 0..15")
        codes = np.pad(q, ((0, pad), (0, 0))).reshape(groups, 16, blocks, block // 2, 2)
        runs = (codes[..., 0] | (codes[..., 1] << 4)).astype(np.uint8)  # [g, 16, nb, block/2]
        stored_zero = zero_point
    elif bits == 8:
        centred = q.astype(np.int16) - zero_point
        if centred.min(initial=0) < -128 or centred.max(initial=0) > 127:
            raise ValueError("8-bit codes minus the zero point must fit int8")
        codes = np.pad(centred.astype(np.int8), ((0, pad), (0, 0))).reshape(groups, 16, blocks, block)
        runs = codes.view(np.uint8)
        stored_zero = 0
    else:
        raise ValueError(f"{bits}-bit codes; BlockMatMul takes 4 or 8")
    per_run = runs.transpose(0, 2, 3, 1).reshape(groups, blocks, -1)  # [g, nb, runs · 16 rows]
    values = [scale] if offset is None else [scale, offset]
    half = all(_fits_fp16(v) for v in values)
    dtype = np.float16 if half else np.float32
    parts = [per_run]
    for v in values:
        padded = np.pad(v.astype(dtype), ((0, pad), (0, 0))).reshape(groups, 16, blocks)
        parts.append(np.ascontiguousarray(padded.transpose(0, 2, 1)).view(np.uint8))
    data = np.concatenate(parts, axis=2).reshape(-1)
    return Packed(data, n, k, block, bits, 16 if half else 32, offset is not None, stored_zero)


def _source_dir() -> Path:
    return Path(str(resources.files(__name__)))


@functools.cache
def _digest() -> str:
    """The sources' and flags' hash: read once per process, not on every library() call."""
    h = hashlib.sha256(" ".join(_FLAGS).encode())
    for name in SOURCES:
        h.update((_source_dir() / name).read_bytes())
    return h.hexdigest()[:16]


def compiler() -> str | None:
    """The C compiler used to build the library: ``$CC``, else ``cc`` or ``gcc`` on PATH."""
    for candidate in (os.environ.get("CC"), "cc", "gcc"):
        if candidate and shutil.which(candidate):
            return candidate
    return None


_built: dict[str, Path | None] = {}


def library(home: Path | None = None) -> Path | None:
    """The compiled library (built once per source version); None where no C compiler can build it
    (a compiler that fails is logged as a warning with its message)."""
    root = (home or default_home()) / "kernels" / _digest()
    key = str(root)
    if key in _built:
        return _built[key]
    target = root / LIBRARY
    if not target.exists():
        cc = compiler()
        if cc is None:
            _built[key] = None
            return None
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, suffix=".so.part")
        os.close(fd)
        src = _source_dir()
        cmd = [cc, *_FLAGS, "-o", tmp, str(src / "blockmatmul.c"), str(src / "ortops.c")]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
            if done.returncode != 0:
                log.warning("BlockMatMul does not build here (%s):\n%s", " ".join(cmd), done.stderr[-4000:])
                _built[key] = None
                return None
            os.replace(tmp, target)  # another process building the same version writes the same bytes
        finally:
            Path(tmp).unlink(missing_ok=True)
    _built[key] = target
    return target


def install(folder: Path, model: onnx.ModelProto) -> Path:
    """Make an onnxruntime-genai ``folder`` whose graph uses BlockMatMul runnable: copy the library in,
    declare the op domain on ``model`` (saved by the caller), and name the library in
    ``genai_config.json``'s decoder session options. Raises RuntimeError where it cannot build.
    """
    built = library()
    if built is None:
        raise RuntimeError("onnxkit's BlockMatMul kernel needs a C compiler (cc, gcc or $CC) to build")
    shutil.copyfile(built, folder / LIBRARY)
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, 1))
    config_path = folder / "genai_config.json"
    config = json.loads(config_path.read_text())
    options = config["model"]["decoder"].setdefault("session_options", {})
    options["custom_ops_library"] = LIBRARY
    config_path.write_text(json.dumps(config, indent=4) + "\n")
    return folder / LIBRARY

