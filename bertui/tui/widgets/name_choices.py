"""A list field's checkboxes: one per name the schema lets the form tick (the New run form's
"compare" arms), holding the ticked names as its ``value``."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Checkbox


class NameChoices(Vertical):
    """One checkbox a name (its id: the name), stacked; ``value`` is the tuple of the names
    ticked, in the schema's order. A checkbox's change bubbles up as ``Checkbox.Changed``."""

    DEFAULT_CSS = "NameChoices { height: auto; width: 1fr; }"

    def __init__(self, boxes: tuple[tuple[str, str], ...], value: tuple[str, ...],
                 tooltip: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.boxes = boxes
        self._initial = value
        self.box_tooltip = tooltip

    def compose(self) -> ComposeResult:
        for name, text in self.boxes:
            yield Checkbox(text, name in self._initial, id=name, classes="toggle",
                           tooltip=self.box_tooltip)

    def _checkboxes(self) -> dict[str, Checkbox] | None:
        """The checkboxes by name, once they are all composed (None before)."""
        found = {str(box.id): box for box in self.query(Checkbox)}
        return found if len(found) == len(self.boxes) else None

    @property
    def value(self) -> tuple[str, ...]:
        found = self._checkboxes()
        if found is None:
            return self._initial
        return tuple(name for name, _ in self.boxes if found[name].value)

    @value.setter
    def value(self, names: tuple[str, ...]) -> None:
        self._initial = tuple(names)
        for name, box in (self._checkboxes() or {}).items():
            box.value = name in names
