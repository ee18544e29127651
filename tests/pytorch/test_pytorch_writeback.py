"""onnxkit.pytorch.save: tuned weights back into the ONNX file, the rest untouched."""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import Tensor

import onnxkit.pytorch as okt

Tiny = Callable[[str, str, int], tuple[Path, Callable[[], tuple[Tensor, ...]]]]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _train_a_step(module: torch.nn.Module, args: tuple[Tensor, ...]) -> None:
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    module.train()
    out = module(*args)
    (out.float() ** 2).mean().backward()
    optimizer.step()
    module.eval()


def _without_payloads(path: Path) -> bytes:
    model = onnx.load(str(path), load_external_data=False)
    for init in model.graph.initializer:
        init.ClearField("raw_data")
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = "-"
    return model.SerializeToString()


def _ort(path: Path, args: tuple[Tensor, ...]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args, strict=True)}
    out: np.ndarray = session.run(None, feeds)[0]
    return out


@pytest.mark.parametrize("kind", ["transactions", "cnn"])
def test_round_trip_reproduces_the_tuned_module(tiny_onnx: Tiny, tmp_path: Path, kind: str) -> None:
    src, make = tiny_onnx(kind, "legacy", 14)
    module = okt.load(src)
    _train_a_step(module, make())
    dst = okt.save(module, src, tmp_path / "tuned.onnx")
    args = make()
    with torch.no_grad():
        expected = module(*args).numpy()
    np.testing.assert_allclose(_ort(dst, args), expected, atol=1e-5, rtol=0)
    assert not np.allclose(_ort(src, args), expected, atol=1e-4)  # the step did change the weights
    assert _without_payloads(dst) == _without_payloads(src)  # the graph is the same, only weights moved


def test_untouched_module_writes_identical_bytes(tiny_onnx: Tiny, tmp_path: Path) -> None:
    src, _ = tiny_onnx("bert", "legacy", 14)
    dst = okt.save(okt.load(src), src, tmp_path / "same.onnx")
    assert dst.read_bytes() == src.read_bytes()


def test_external_data_stays_external(minilm_onnx: Callable[[str, str, int], Path], tmp_path: Path) -> None:
    src = minilm_onnx("pooling", "dynamo", 18)
    folder = tmp_path / "beside"
    shutil.copytree(src.parent, folder)
    src = folder / "model.onnx"
    data_name = next(p.name for p in folder.iterdir() if p.suffix == ".data")
    before = _digest(folder / data_name)

    module = okt.load(src)
    untouched = okt.save(module, src, tmp_path / "elsewhere" / "model.onnx")
    assert untouched.read_bytes() == src.read_bytes()  # same location name, in a new folder
    assert _digest(untouched.parent / data_name) == before

    with torch.no_grad():
        module.get_parameter(next(iter(dict(module.named_parameters())))).add_(0.5)
    tuned = okt.save(module, src, folder / "tuned.onnx")  # beside the source: data must not collide
    assert _digest(folder / data_name) == before
    assert (folder / "tuned.onnx.data").is_file()
    assert tuned.stat().st_size < 1_000_000  # weights did not move inline
    locations = {
        e.value
        for i in onnx.load(str(tuned), load_external_data=False).graph.initializer
        for e in i.external_data
        if e.key == "location"
    }
    assert locations == {"tuned.onnx.data"}
    ids = torch.randint(1000, 2000, (2, 8))
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    with torch.no_grad():
        np.testing.assert_allclose(_ort(tuned, args), module.eval()(*args).numpy(), atol=1e-5, rtol=0)


def test_save_in_place(tiny_onnx: Tiny, tmp_path: Path) -> None:
    original, make = tiny_onnx("mlp", "dynamo", 18)
    src = tmp_path / "model.onnx"
    shutil.copy2(original, src)
    for extra in original.parent.glob(original.name + ".data"):
        shutil.copy2(extra, tmp_path / extra.name)
    module = okt.load(src)
    _train_a_step(module, make())
    okt.save(module, src, src)
    args = make()
    with torch.no_grad():
        np.testing.assert_allclose(_ort(src, args), module(*args).numpy(), atol=1e-5, rtol=0)


def test_refuses_another_models_file(tiny_onnx: Tiny, tmp_path: Path) -> None:
    mlp, _ = tiny_onnx("mlp", "legacy", 14)
    cnn, _ = tiny_onnx("cnn", "legacy", 14)
    with pytest.raises(okt.WeightMismatch, match=r"has no initializer\(s\) \[.*\] that the module holds"):
        okt.save(okt.load(mlp), cnn, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_refuses_a_parameter_whose_shape_changed(tiny_onnx: Tiny, tmp_path: Path) -> None:
    src, _ = tiny_onnx("mlp", "legacy", 14)
    module = okt.load(src)
    name, param = next(iter(module.named_parameters()))
    setattr(module, name, torch.nn.Parameter(torch.zeros(param.shape[0] + 1, *param.shape[1:])))
    onnx_name = re.escape(module.initializer_names[name])
    expected = re.escape(str(list(param.shape)))
    with pytest.raises(okt.WeightMismatch, match=rf"initializer '{onnx_name}' has shape \[.*\]; .* expects {expected}"):
        okt.save(module, src, tmp_path / "x.onnx")
