"""The documented Python API: onnxkit.export(...) and onnxkit.export_module(...) from the top-level package."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import onnxkit


def test_top_level_names_import_lazily_without_torch() -> None:
    # a fresh interpreter: this test session has long imported torch
    code = (
        "import json, sys, onnxkit\n"
        "from onnxkit import export, export_module\n"
        "print(json.dumps({'callable': [callable(export), callable(export_module), callable(onnxkit.export)],"
        " 'torch': 'torch' in sys.modules, 'transformers': 'transformers' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"callable": [True, True, True], "torch": False, "transformers": False}


def test_onnxkit_export_exports_a_folder(tiny_bert_dir: Path, tmp_path: Path) -> None:
    import onnxkit.export.api  # binds the package to onnxkit.export: it must stay callable

    out = onnxkit.export(tiny_bert_dir, "pooling", tmp_path / "out")
    assert out == tmp_path / "out"
    card = json.loads((out / "onnxkit.json").read_text())
    assert card["task"] == "pooling" and card["parity"]["max_abs_diff"]["embeddings"] <= 1e-4
    from onnxkit import export

    assert export is onnxkit.export  # one object, whichever way it is reached


def test_onnxkit_export_module_exports_a_module(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    path = onnxkit.export_module(
        module,
        (torch.randn(3, 4),),
        tmp_path / "mlp.onnx",
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], want, atol=1e-5)


def test_unknown_top_level_name_is_an_attribute_error() -> None:
    try:
        onnxkit.exporter  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "exporter" in str(exc)
    else:
        raise AssertionError("onnxkit.exporter should not exist")
