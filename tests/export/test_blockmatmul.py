"""onnxkit's BlockMatMul operator: every GGUF block type times float32 activations, in onnxruntime.

The library is compiled from src/onnxkit/export/kernels by the C compiler at hand; each product is
checked against float64 A·Wᵀ on the dequantized weights, for one row of activations (decode) and
a few (batched decode) and many (prefill), on the AVX-512 path and on the portable one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from tiny_gguf import Q4_1, QUANTIZED, encode, realistic_weights

from onnxkit.export import gguf_blocks, kernels
from onnxkit.export.gguf_compute import EXACT, KERNEL, default_plan
from onnxkit.export.gguf_nodes import Rewrite, block_matmul

K, N = 512, 100  # N not a multiple of 16: the last row group is partial


@pytest.fixture(scope="module")
def library() -> Path:
    built = kernels.library()
    assert built is not None, "no C compiler: BlockMatMul cannot be built here"
    return built



def _session(rw: Rewrite, library: Path, n: int, threads: int = 2) -> ort.InferenceSession:
    graph = helper.make_graph(
        rw.nodes, "g",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, None, None])],  # K checked by the op itself
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, None, n])],
        rw.initializers,
    )
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid(kernels.DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    options = ort.SessionOptions()
    options.register_custom_ops_library(str(library))
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _check(name: str, library: Path, rows: int) -> int:
    """Run one type's BlockMatMul against float64; returns the stored scale width."""
    blocks = gguf_blocks.decode("w", QUANTIZED[name], encode(realistic_weights(N, K, 2), QUANTIZED[name]), N, K)
    rw = Rewrite()
    block_matmul(rw, "layer", "A", blocks, "Y")
    assert [node.op_type for node in rw.nodes] == ["BlockMatMul"]  # one node: no halves, no min term
    a = np.random.default_rng(3).standard_normal((1, rows, K)).astype(np.float32)
    (y,) = _session(rw, library, N).run(None, {"A": a})
    want = a[0].astype(np.float64) @ blocks.dequantize().astype(np.float64).T
    assert y.shape == (1, rows, N)
    assert np.abs(y[0] - want).max() <= 1e-6 * np.abs(want).max(), name
    return next(a.i for node in rw.nodes for a in node.attribute if a.name == "scale_bits")


# one row; a few rows, each on its own (batched decode); eight rows at a time through a dequantized
# panel, and three left over (prefill)
@pytest.mark.parametrize("rows", [1, 3, 11], ids=["decode", "batched-decode", "prefill"])
@pytest.mark.parametrize("name", list(QUANTIZED))
def test_blockmatmul_multiplies_with_the_exactrealistic_weights(name: str, rows: int, library: Path) -> None:
    scale_bits = _check(name, library, rows)
    # GGUF's d and m are fp16 and stay so; K-quants' d·sc are products that need float32.
    assert scale_bits == (32 if name in ("Q4_K", "Q5_K", "Q6_K") else 16)


def test_the_portable_path_computes_the_same(library: Path) -> None:
    """Where the CPU has no AVX-512 the same library runs plain C (forced here by the environment)."""
    script = (
        "import ctypes, sys; sys.path[:0] = sys.argv[1:3]\n"
        "from test_blockmatmul import _check, QUANTIZED\n"
        "from pathlib import Path\n"
        "lib = ctypes.CDLL(sys.argv[3]); assert lib.okx_uses_avx512() == 0\n"
        "for name in QUANTIZED:\n"
        "    for rows in (1, 3, 11): _check(name, Path(sys.argv[3]), rows)\n"
        "print('portable ok')\n"
    )
    here = Path(__file__).parent
    src = Path(kernels.__file__).parents[3]
    env = dict(os.environ, ONNXKIT_KERNEL_PORTABLE="1")
    done = subprocess.run([sys.executable, "-c", script, str(here), str(src), str(library)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "portable ok" in done.stdout


def test_bad_shapes_and_attributes_are_errors_not_crashes(library: Path) -> None:
    blocks = gguf_blocks.decode("w", Q4_1, encode(realistic_weights(32, 64, 1), Q4_1), 32, 64)
    rw = Rewrite()
    block_matmul(rw, "layer", "A", blocks, "Y")
    session = _session(rw, library, 32)
    with pytest.raises(Exception, match="BlockMatMul: expected A float"):
        session.run(None, {"A": np.zeros((1, 2, 48), np.float32)})  # K is 64
    # records that do not match N and K
    short = Rewrite()
    block_matmul(short, "layer", "A", blocks, "Y")
    data = numpy_helper.to_array(short.initializers[0])
    short.initializers[0].CopyFrom(numpy_helper.from_array(data[:-1], short.initializers[0].name))
    with pytest.raises(Exception, match="W's size does not match"):
        _session(short, library, 32).run(None, {"A": np.zeros((1, 1, 64), np.float32)})
    # a block length the kernel has no layout for
    odd = Rewrite()
    block_matmul(odd, "layer", "A", blocks, "Y")
    next(a for a in odd.nodes[0].attribute if a.name == "block_size").i = 64
    with pytest.raises(Exception, match="no layout this kernel computes"):
        _session(odd, library, 32)
    # a size past the kernel's bound, before anything is derived from it
    huge = Rewrite()
    block_matmul(huge, "layer", "A", blocks, "Y")
    next(a for a in huge.nodes[0].attribute if a.name == "N").i = 1 << 40
    with pytest.raises(Exception, match="no layout this kernel computes"):
        _session(huge, library, 32)


def test_pack_refuses_what_the_layout_cannot_hold() -> None:
    q = np.zeros((16, 64), np.uint8)
    scale = np.ones((16, 2), np.float32)
    with pytest.raises(ValueError, match="blocks of 16 or 32"):
        kernels.pack(q, np.ones((16, 1), np.float32), 0, None, 4)
    with pytest.raises(ValueError, match="must fit int8"):
        kernels.pack(q + 255, scale, 0, None, 8)
    with pytest.raises(ValueError, match=r"0\.\.15"):
        kernels.pack(q + 16, scale, 0, None, 4)


def test_without_a_working_compiler_there_is_no_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CC", "false")  # found, but fails: a warning with what it said
    assert kernels.library(tmp_path / "a") is None
    assert "BlockMatMul does not build here" in caplog.text
    monkeypatch.delenv("CC")
    monkeypatch.setenv("PATH", str(tmp_path))  # none at all
    assert kernels.compiler() is None
    assert kernels.library(tmp_path / "b") is None


def test_the_default_plan_is_the_kernel_where_it_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_plan() is KERNEL
    monkeypatch.setattr(kernels, "library", lambda home=None: None)
    assert default_plan() is EXACT  # MatMulNBits, float32 activations: slower, the same answers
