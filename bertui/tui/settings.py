"""The user's TUI settings (the chosen theme), kept in ``<user config dir>/settings.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def config_dir() -> Path:
    """``platformdirs.user_config_dir("bertui")``."""
    from platformdirs import user_config_dir

    return Path(user_config_dir("bertui", appauthor=False))


class Settings:
    """A small JSON file; unreadable or missing means defaults, a failed save is not fatal."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / "settings.json"
        self.data: dict[str, Any] = {}
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                self.data = loaded
        except (OSError, ValueError):
            pass

    @property
    def theme(self) -> str | None:
        theme = self.data.get("theme")
        return theme if isinstance(theme, str) else None

    def set_theme(self, name: str) -> str | None:
        """Remember the theme; returns a one-line problem when the file cannot be written."""
        self.data["theme"] = name
        return self.save()

    def save(self) -> str | None:
        from bertui.core.runs import atomic_write_json

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, self.data)
        except OSError as exc:
            return f"cannot save settings to {self.path}: {exc.strerror or exc}"
        return None
