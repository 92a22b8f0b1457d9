"""Command palette providers: bertui's actions (global, then those of the current screen) and
the themes. The palette is opened with ctrl+p."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from bertui.tui.app import BertuiApp


class ActionsProvider(Provider):
    """Navigation plus the commands the current screen offers (``palette_commands``)."""

    def _commands(self):
        app: BertuiApp = self.app  # type: ignore[assignment]
        commands = [
            ("New run", "Pick a model and a dataset, start training", app.action_new_run),
            ("New study", "Learning curves: runs over label budgets × seeds",
             app.action_new_study),
            ("Runs", "Every run on this machine", app.action_show_runs),
        ]
        screen = self.screen
        extra = getattr(screen, "palette_commands", None)
        if extra is not None:
            commands.extend(extra())
        return commands

    async def discover(self) -> Hits:
        for name, help_text, callback in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)


class ThemesProvider(Provider):
    """One entry per registered theme: "Theme: bertui-night", …"""

    def _themes(self) -> list[str]:
        return sorted(name for name in self.app.available_themes if name != "textual-ansi")

    def _set(self, name: str) -> None:
        self.app.theme = name

    async def discover(self) -> Hits:
        for name in self._themes():
            yield DiscoveryHit(f"Theme: {name}", partial(self._set, name),
                               help="Switch the colour theme (remembered)")

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name in self._themes():
            label = f"Theme: {name}"
            score = matcher.match(label)
            if score > 0:
                yield Hit(score, matcher.highlight(label), partial(self._set, name),
                          help="Switch the colour theme (remembered)")
