"""The chunk planner behind every text model's merged batches (tasks/text_batch)."""

from __future__ import annotations

import itertools
import random

import pytest

from onnxkit.tasks.text_batch import plan_chunks, run_sorted


def cost(lengths: list[int], ends: list[int], overhead: float) -> float:
    total, begin = 0.0, 0
    for end in ends:
        total += overhead + (end - begin) * lengths[end - 1]
        begin = end
    return total


def fixed(n: int, rows: int) -> list[int]:
    return [min(n, s + rows) for s in range(0, n, rows)]


def all_plans(n: int, rows: int) -> list[list[int]]:
    plans = []
    for cuts in itertools.product([False, True], repeat=n - 1):
        ends = [i + 1 for i, c in enumerate(cuts) if c] + [n]
        sizes = [e - b for b, e in zip([0, *ends], ends, strict=False)]
        if max(sizes) <= rows:
            plans.append(ends)
    return plans


def test_one_long_sequence_gets_its_own_run() -> None:
    lengths = [5] * 31 + [100]
    assert plan_chunks(lengths, 32, overhead=24) == [31, 32]


def test_chunks_cover_everything_and_respect_the_row_limit() -> None:
    rng = random.Random(3)
    for _ in range(50):
        lengths = sorted(rng.randint(1, 200) for _ in range(rng.randint(1, 300)))
        ends = plan_chunks(lengths, 32)
        assert ends[-1] == len(lengths)
        sizes = [e - b for b, e in zip([0, *ends], ends, strict=False)]
        assert all(1 <= s <= 32 for s in sizes)


@pytest.mark.parametrize("overhead", [0, 8, 24, 100])
def test_the_plan_is_optimal_against_brute_force(overhead: float) -> None:
    rng = random.Random(overhead)
    for _ in range(30):
        n = rng.randint(1, 9)
        lengths = sorted(rng.randint(1, 60) for _ in range(n))
        best = min(cost(lengths, p, overhead) for p in all_plans(n, 4))
        assert cost(lengths, plan_chunks(lengths, 4, overhead), overhead) == pytest.approx(best)


def test_the_plan_never_costs_more_than_fixed_chunks() -> None:
    rng = random.Random(7)
    for _ in range(30):
        lengths = sorted(rng.randint(4, 130) for _ in range(rng.randint(32, 512)))
        planned = cost(lengths, plan_chunks(lengths, 32), 24)
        assert planned <= cost(lengths, fixed(len(lengths), 32), 24)


def test_run_sorted_returns_each_request_in_its_own_order() -> None:
    groups: list[list[str] | BaseException] = [["ccc", "a"], ValueError("bad"), ["bb", "dddddddddddd", "e"]]
    chunks: list[list[str]] = []

    def run_chunk(items: list[str]) -> list[str]:
        chunks.append(items)
        assert all(len(x) <= len(y) for x, y in itertools.pairwise(items))  # sorted by length
        return [x.upper() for x in items]

    def build(xs: list[str], ys: list[str]) -> list[tuple[str, str]]:
        return list(zip(xs, ys, strict=True))

    out = run_sorted(groups, length=len, chunk=2, run_chunk=run_chunk, build=build)
    assert out[0] == [("ccc", "CCC"), ("a", "A")]
    assert isinstance(out[1], ValueError)
    assert out[2] == [("bb", "BB"), ("dddddddddddd", "DDDDDDDDDDDD"), ("e", "E")]
    assert sorted(x for c in chunks for x in c) == sorted(["ccc", "a", "bb", "dddddddddddd", "e"])
    assert all(len(c) <= 2 for c in chunks)
