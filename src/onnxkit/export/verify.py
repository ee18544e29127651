"""The parity gate: a checked graph whose outputs match the reference, or no export at all."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx.checker

from onnxkit.errors import SupplyError
from onnxkit.types import Array

# Real sentences of clearly different lengths, so that batches carry real padding.
SAMPLE_TEXTS: tuple[str, ...] = (
    "Hello.",
    "The weather is lovely today.",
    "A man is playing a guitar on a street corner while people walk past.",
    "I returned the jacket because the zip broke after two days.",
    "Interest rates rose again this quarter, and analysts expect mortgage costs to follow within months.",
    "Is this the way to the station?",
    "The committee postponed its decision on the new bridge until engineers finish a second survey "
    "of the riverbed, which could take most of the coming year.",
    "Great film!",
)


class ParityError(SupplyError):
    """An exported graph disagrees with its reference beyond the tolerance."""


def check_graph(path: Path) -> None:
    """onnx.checker's full check (shape inference included), by path so external data is allowed."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise SupplyError(f"exported graph {path.name} failed onnx.checker: {exc}") from exc


def max_diffs(reference: Mapping[str, Array], got: Mapping[str, Array]) -> dict[str, float]:
    diffs: dict[str, float] = {}
    for name, want in reference.items():
        have = got[name]
        if have.shape != want.shape:
            raise ParityError(
                f"output {name!r} has shape {list(have.shape)}; the reference has {list(want.shape)}"
            )
        diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
        diffs[name] = float(diff.max()) if diff.size else 0.0
    return diffs


def assert_close(diffs: Mapping[str, float], atol: float, what: str) -> None:
    bad = {name: d for name, d in diffs.items() if not d <= atol}  # NaN fails too
    if bad:
        detail = ", ".join(f"{name}: max |diff| {d:.3g}" for name, d in diffs.items())
        raise ParityError(
            f"parity check failed on {what}: {detail} (allowed {atol:g}); nothing was written. "
            "Raise --atol only if the difference is expected (e.g. fp16), otherwise report the model"
        )


def row_cosines(a: Array, b: Array) -> Array:
    """Cosine between the rows of ``a`` and ``b`` (every axis after the first flattened)."""
    a2 = a.reshape(a.shape[0], -1).astype(np.float64)
    b2 = b.reshape(b.shape[0], -1).astype(np.float64)
    num = (a2 * b2).sum(axis=1)
    den = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
    return np.asarray(num / np.maximum(den, 1e-12))


def mean_cosine(a: Array, b: Array) -> float:
    return float(np.mean(row_cosines(a, b)))


def argmax_agreement(a: Array, b: Array) -> float:
    return float(np.mean(np.argmax(a, axis=-1) == np.argmax(b, axis=-1)))


def random_token_batch(
    names: Sequence[str], vocab_size: int, batch: int, seq: int, type_vocab: int, seed: int = 0
) -> dict[str, Array]:
    """Random ids with right padding of random lengths, as a tokenizer would produce."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, seq + 1, size=batch)
    lengths[0] = seq  # at least one row without padding
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    feeds: dict[str, Array] = {
        "input_ids": rng.integers(0, vocab_size, size=(batch, seq), dtype=np.int64) * mask,
        "attention_mask": mask,
    }
    if "token_type_ids" in names:
        types = rng.integers(0, max(type_vocab, 1), size=(batch, seq), dtype=np.int64)
        feeds["token_type_ids"] = types * mask
    return {n: feeds[n] for n in names}
