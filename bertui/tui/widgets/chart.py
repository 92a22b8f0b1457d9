"""A plotext chart that redraws at most a few times a second, only while it can be seen.

A screen hands the chart a *drawing function* ``draw(plt, colors)`` which calls plotext through
``plt`` (never the global ``plotext``) and takes its colours from ``colors(name)`` (an RGB triple
from the current theme, see :func:`bertui.tui.themes.chart_color`). The chart keeps the newest
function, draws it when it is shown, and draws again when the theme changes.

In a narrow chart plotext's legend (drawn over the top-left of the plot) would hide the curves:
there the series' labels go to one coloured line under the plot instead.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from textual_plotext import PlotextPlot

from bertui.tui.themes import chart_color

Draw = Callable[[Any, Callable[[str], tuple[int, int, int]]], None]
MIN_INTERVAL = 0.25  # seconds between two redraws: at most 4 Hz
INSIDE_LEGEND_WIDTH = 50  # narrower charts get their legend on a line of its own
MOST_TICKS = 6  # on a step axis


def integer_ticks(low: float, high: float, most: int = MOST_TICKS) -> list[int]:
    """Whole numbers from ``low`` to ``high`` a round step apart (1, 2 or 5 × 10^k), at most
    ``most`` of them: the ticks of an axis that counts steps."""
    first, last = math.ceil(low), math.floor(high)
    if last <= first:
        return [first] if last == first else []
    factors = itertools.cycle((2, 2.5, 2))  # steps 1, 2, 5, 10, 20, 50, …

    def ticks(step: int) -> range:
        return range(math.ceil(first / step) * step, last + 1, step)

    step = 1
    while len(ticks(step)) > most:
        step = int(step * next(factors))
    return list(ticks(step))


def step_axis(plt: Any, steps: Iterable[float], total: int | None) -> None:
    """Label the x axis with whole steps: 0 to ``total`` when it is known, else the range of
    ``steps`` (the x values drawn)."""
    if total:
        low, high = 0.0, float(total)
        plt.xlim(0, total)
    else:
        xs = [float(x) for x in steps]
        if not xs:
            return
        low, high = min(xs), max(xs)
    ticks = integer_ticks(low, high)
    if ticks:
        plt.xticks(ticks, [str(t) for t in ticks])


class _LegendOutside:
    """Stands in for ``plt`` while drawing: ``plot(..., label=L, color=C)`` is drawn without
    its label, and (L, C) is kept for the legend line."""

    def __init__(self, plt: Any) -> None:
        self._plt = plt
        self.legend: list[tuple[str, Any]] = []

    def plot(self, *args: Any, label: str | None = None, **kwargs: Any) -> Any:
        if label:
            self.legend.append((label, kwargs.get("color")))
        return self._plt.plot(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._plt, name)


class Chart(PlotextPlot):
    """A PlotextPlot fed with drawing functions; see the module docstring."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._draw: Draw | None = None
        self._dirty = False
        self._last = 0.0
        self.draws = 0  # how many times the figure was rebuilt (tests read it)
        self.legend: list[tuple[str, Any]] = []  # drawn under the plot when narrow

    def on_mount(self) -> None:
        super().on_mount()
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._theme_changed())
        self.set_interval(MIN_INTERVAL, self._tick)

    def plot(self, draw: Draw) -> None:
        """Use ``draw`` for the next redraw (now, if the last one is old enough)."""
        self._draw = draw
        self._dirty = True
        if time.monotonic() - self._last >= MIN_INTERVAL:
            self._tick()

    def _theme_changed(self) -> None:
        self._dirty = self._draw is not None
        self._last = 0.0
        self.call_after_refresh(self._tick)

    def _visible(self) -> bool:
        try:
            return self.screen.is_active and self.display and self.region.area > 0
        except Exception:
            return False

    def _tick(self) -> None:
        if not self._dirty or self._draw is None or not self.is_mounted:
            return
        if not self._visible() and self.draws:
            return  # drawn later, when shown (the first draw happens regardless: layout)
        self._dirty = False
        self._last = time.monotonic()
        plt = self.plt
        plt.clear_figure()
        variables = self.app.theme_variables
        target: Any = plt
        if self.size.width < INSIDE_LEGEND_WIDTH:
            target = _LegendOutside(plt)
        self._draw(target, lambda name: chart_color(variables, name))
        self.legend = getattr(target, "legend", [])
        self.draws += 1
        self.refresh()

    def on_show(self) -> None:
        self._tick()

    def on_resize(self) -> None:
        # the legend's place depends on the width: draw again
        if self._draw is not None and (self.size.width < INSIDE_LEGEND_WIDTH) != bool(
                self.legend):
            self._dirty = True
            self._last = 0.0
            self.call_after_refresh(self._tick)

    def render(self) -> Any:
        if not self.legend or self.size.height < 4:
            return super().render()
        from rich.style import Style
        from rich.text import Text

        plt = self.plt
        plt.plotsize(self.size.width, self.size.height - 1)
        plt._set_size(self.size.width, self.size.height - 1)  # as PlotextPlot.render does
        plt.theme(self._get_plotext_theme_name(self.app.theme))
        text = Text.from_ansi(plt.build().rstrip("\n"))
        text.append("\n")
        for i, (label, color) in enumerate(self.legend):
            if i:
                text.append(" ")
            rgb = tuple(color) if isinstance(color, (tuple, list)) else None
            text.append("▬", Style(color=f"rgb{rgb}" if rgb else None))
            text.append(label)
        return text
