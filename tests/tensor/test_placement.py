"""Where a batch runs: on the event loop while runs are tiny, in a worker thread otherwise."""

from __future__ import annotations

from onnxkit.runtime.batching import Placement

INLINE_BELOW = 0.0005


def test_first_run_goes_to_a_thread_and_a_tiny_one_then_stays_inline() -> None:
    p = Placement(INLINE_BELOW)
    assert not p.inline()  # nothing measured yet: never risk the event loop
    p.record(0.0001, inline=False)
    assert p.inline()
    for _ in range(50):
        p.record(0.0001, inline=True)
        assert p.inline()


def test_threaded_runs_that_look_slow_are_probed_inline_again() -> None:
    # A thread's timing includes waiting for the GIL after onnxruntime returns: a tiny model can look
    # like 1 ms there. Without a probe it would stay in threads for good.
    p = Placement(INLINE_BELOW)
    decisions = []
    for _ in range(Placement.PROBE_EVERY):
        decisions.append(p.inline())
        p.record(0.001, inline=False)
    assert decisions == [False] * Placement.PROBE_EVERY
    assert p.inline()  # the probe, after PROBE_EVERY runs in threads
    p.record(0.0001, inline=True)  # inline, it is tiny after all
    assert p.inline()


def test_a_probe_that_confirms_a_slow_model_sends_it_back_to_threads() -> None:
    p = Placement(INLINE_BELOW)
    for _ in range(Placement.PROBE_EVERY + 1):
        p.record(0.002, inline=False)
    assert p.inline()
    p.record(0.002, inline=True)
    assert not p.inline()


def test_models_slower_than_the_probe_bound_never_run_on_the_loop() -> None:
    p = Placement(INLINE_BELOW)
    for _ in range(10 * Placement.PROBE_EVERY):
        assert not p.inline()
        p.record(Placement.PROBE_BELOW_S * 2, inline=False)


def test_zero_keeps_every_run_in_a_thread() -> None:
    p = Placement(0.0)
    for _ in range(3 * Placement.PROBE_EVERY):
        p.record(0.00001, inline=False)
        assert not p.inline()
