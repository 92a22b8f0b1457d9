"""What every main screen shares: the header with its title, the too-small line, the footer,
and the palette commands that belong to the screen."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header

from bertui.tui.widgets.too_small import MIN_HEIGHT, MIN_WIDTH, TooSmall

PaletteCommand = tuple[str, str, Callable[[], object]]


class BertuiScreen(Screen):
    """A main screen. Subclasses implement ``compose_body`` (and may add palette commands)."""

    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (MIN_WIDTH, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (MIN_HEIGHT, "-tall")]

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield TooSmall()
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    @property
    def too_small(self) -> bool:
        return self.has_class("-narrow") or self.has_class("-short")

    def palette_commands(self) -> Iterable[PaletteCommand]:
        """(name, help, callback) entries for the command palette, for this screen."""
        return ()
