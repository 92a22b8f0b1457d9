"""The text formatters and the chart's step ticks: numbers as people read them."""

from __future__ import annotations

import pytest

from bertui.tui.format import number
from bertui.tui.widgets.chart import integer_ticks


@pytest.mark.parametrize(("value", "text"), [
    (2.869565217391304, "2.87"), (3.0, "3"), (3, "3"), (0.5, "0.5"), (0.48, "0.48"),
    (2.999, "3"), (10.0, "10"), (-0.001, "0"), (None, "—"), ("auto", "auto"),
])
def test_number_rounds_and_drops_trailing_zeros(value, text):
    assert number(value) == text


@pytest.mark.parametrize(("low", "high", "ticks"), [
    (0, 69, [0, 20, 40, 60]), (0, 250, [0, 50, 100, 150, 200, 250]), (0, 3, [0, 1, 2, 3]),
    (0, 526, [0, 100, 200, 300, 400, 500]), (5, 1234, [200, 400, 600, 800, 1000, 1200]),
    (0.2, 17.2, [5, 10, 15]), (12, 12, [12]),
])
def test_step_ticks_are_whole_and_round(low, high, ticks):
    assert integer_ticks(low, high) == ticks
    assert len(ticks) <= 6
