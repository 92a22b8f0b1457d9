"""What every main screen shares: the header with its title, the too-small line, the footer,
and the palette commands that belong to the screen."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from textual import events
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Header

from bertui.tui.widgets.too_small import MIN_HEIGHT, MIN_WIDTH, TooSmall

PaletteCommand = tuple[str, str, Callable[[], object]]


class BertuiScreen(Screen):
    """A main screen. Subclasses implement ``compose_body`` (and may add palette commands)."""

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield TooSmall()
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    _focus_before_small: Widget | None = None

    def on_resize(self, event: events.Resize) -> None:
        # A class that changes only when the answer changes: a class change restyles every
        # widget of the screen (Textual's breakpoints would add one at each start).
        small = event.size.width < MIN_WIDTH or event.size.height < MIN_HEIGHT
        if small == self.too_small:
            return
        if small:  # hiding the body takes the focus away: give it back when the body returns
            self._focus_before_small = self.focused
        self.set_class(small, "-too-small")
        if not small and (widget := self._focus_before_small) is not None:
            self._focus_before_small = None
            self.call_after_refresh(self._refocus, widget)

    def _refocus(self, widget: Widget) -> None:
        if self.focused is None and widget.is_attached and widget.screen is self:
            widget.focus()

    @property
    def too_small(self) -> bool:
        return self.has_class("-too-small")

    def palette_commands(self) -> Iterable[PaletteCommand]:
        """(name, help, callback) entries for the command palette, for this screen."""
        return ()
