"""A plotext chart that redraws at most a few times a second, only while it can be seen.

A screen hands the chart a *drawing function* ``draw(plt, colors)`` which calls plotext through
``plt`` (never the global ``plotext``) and takes its colours from ``colors(name)`` (an RGB triple
from the current theme, see :func:`bertui.tui.themes.chart_color`). The chart keeps the newest
function, draws it when it is shown, and draws again when the theme changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from textual_plotext import PlotextPlot

from bertui.tui.themes import chart_color

Draw = Callable[[Any, Callable[[str], tuple[int, int, int]]], None]
MIN_INTERVAL = 0.25  # seconds between two redraws: at most 4 Hz


class Chart(PlotextPlot):
    """A PlotextPlot fed with drawing functions; see the module docstring."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._draw: Draw | None = None
        self._dirty = False
        self._last = 0.0
        self.draws = 0  # how many times the figure was rebuilt (tests read it)

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
        self._draw(plt, lambda name: chart_color(variables, name))
        self.draws += 1
        self.refresh()

    def on_show(self) -> None:
        self._tick()
