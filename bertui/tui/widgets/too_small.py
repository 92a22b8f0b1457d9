"""The one line that replaces a screen whose terminal is smaller than 80×24."""

from __future__ import annotations

from textual.widgets import Static

MIN_WIDTH = 80
MIN_HEIGHT = 24
MESSAGE = f"Please enlarge the terminal to at least {MIN_WIDTH}×{MIN_HEIGHT} for bertui."


class TooSmall(Static):
    """Hidden unless the screen has the ``-too-small`` class (see bertui.tcss)."""

    def __init__(self) -> None:
        super().__init__(MESSAGE, id="too-small")
