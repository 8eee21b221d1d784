"""TargetWindow memory stays bounded by its point count and its time horizon."""

from __future__ import annotations

import pytest
from phaselens.analyzers.window import TargetWindow
from phaselens.model import EngineSnapshot, make_labels
from phaselens.parsers.engines import canonical as c

LABELS = make_labels({"model_name": "m", "engine": "0"})


def snap(time: float, value: float) -> EngineSnapshot:
    return EngineSnapshot("vllm", time, {(c.PROMPT_TOKENS, LABELS): value}, {})


def test_point_count_is_bounded() -> None:
    window = TargetWindow(horizon_seconds=1e9, max_points=50)
    for i in range(5000):
        window.add(snap(float(i), float(i)))
        assert len(window) <= 50
    assert len(window) == 50
    # The oldest points went first: the increase covers exactly the 50 newest.
    assert window.increase(c.PROMPT_TOKENS, ("m", "0")) == 49.0
    assert window.span() == 49.0


def test_horizon_is_bounded() -> None:
    window = TargetWindow(horizon_seconds=30.0)
    for i in range(0, 1000, 2):  # scrapes every 2 s
        window.add(snap(float(i), 3.0 * i))
        latest = window.latest
        assert latest is not None
        assert window.span() <= 30.0
    assert len(window) == 16  # t = 968 .. 998
    assert window.rate(c.PROMPT_TOKENS, ("m", "0")) == pytest.approx(3.0)


def test_a_lone_point_older_than_the_horizon_is_kept_until_replaced() -> None:
    window = TargetWindow(horizon_seconds=5.0)
    window.add(snap(0.0, 1.0))
    window.add(snap(100.0, 2.0))  # long outage: the old point leaves, the new one stays
    assert len(window) == 1 and window.increase(c.PROMPT_TOKENS, ("m", "0")) is None
    assert window.rate(c.PROMPT_TOKENS, ("m", "0")) is None


def test_clock_step_back_starts_over() -> None:
    window = TargetWindow(horizon_seconds=100.0)
    for t in (10.0, 11.0, 12.0):
        window.add(snap(t, t))
    window.add(snap(5.0, 100.0))
    assert len(window) == 1 and window.span() == 0.0


def test_horizon_must_be_positive() -> None:
    with pytest.raises(ValueError, match="horizon"):
        TargetWindow(horizon_seconds=0.0)
