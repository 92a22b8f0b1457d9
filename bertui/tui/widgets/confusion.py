"""A confusion matrix as a small grid: rows are true labels, columns predicted labels.

Correct counts (the diagonal) are tinted with the theme's success colour, mistakes with its
error colour, stronger for larger counts; colours are read from the theme at render time.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from bertui.tui.format import one_line
from bertui.tui.themes import theme_color


class ConfusionMatrix(Static):
    """``ConfusionMatrix(title, labels, matrix)``; ``matrix[i][j]`` = true i predicted j."""

    DEFAULT_CSS = """
    ConfusionMatrix { width: auto; height: auto; padding: 0 1; }
    """

    def __init__(self, title: str, labels: list[str], matrix: list[list[int]] | None,
                 *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.labels = labels
        self.matrix = matrix

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _t: self._paint())
        self._paint()

    def _paint(self) -> None:
        self.update(self.build_table())

    def build_table(self) -> Table:
        variables = self.app.theme_variables
        good = theme_color(variables, "success")
        bad = theme_color(variables, "error")
        muted = theme_color(variables, "foreground-muted")
        table = Table(title=Text(self.title, style="bold"), title_justify="left", box=None,
                      padding=(0, 1), show_edge=False, header_style=f"bold {muted}")
        table.add_column("", style=muted, no_wrap=True)
        width = 10
        for label in self.labels:
            table.add_column(one_line(label, width), justify="right", no_wrap=True)
        if not self.matrix:
            table.add_row("no data")
            return table
        largest = max((max(row) for row in self.matrix if row), default=1) or 1
        for i, row in enumerate(self.matrix):
            cells = []
            for j, value in enumerate(row):
                strength = value / largest
                color = good if i == j else bad
                if value == 0:
                    style = muted
                elif strength > 0.5:
                    style = f"bold {color}"
                else:
                    style = color
                cells.append(Text(str(value), style=style))
            label = self.labels[i] if i < len(self.labels) else str(i)
            table.add_row(one_line(label, width), *cells)
        return table
