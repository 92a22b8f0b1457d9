"""Input suggesters for the New run form: file-system paths, and a list of known names."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from textual.suggester import Suggester


def looks_like_path(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~")) or value in (".", "..")


def complete_path(value: str, *, files: Iterable[str] | None = None) -> str | None:
    """Complete the last part of a path: a folder (with a trailing '/') or, when ``files``
    (suffixes) is given, a file with one of them; None when nothing matches."""
    folder, _, prefix = value.rpartition("/")
    base = Path(os.path.expanduser(folder or "/")) if value.startswith("/") or folder else Path()
    try:
        entries = sorted(os.scandir(base), key=lambda e: e.name)
    except OSError:
        return None
    suffixes = tuple(files) if files is not None else None
    for entry in entries:
        if not entry.name.startswith(prefix) or entry.name == prefix:
            continue
        if entry.name.startswith(".") and not prefix.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            continue
        if is_dir:
            return f"{folder}/{entry.name}/" if folder or value.startswith("/") else entry.name
        if suffixes is None or entry.name.lower().endswith(suffixes):
            return f"{folder}/{entry.name}" if folder or value.startswith("/") else entry.name
    return None


class SpecSuggester(Suggester):
    """Suggests from ``names`` (set later, e.g. once cached models are listed) and completes
    paths; ``files`` completes data files too (else folders only)."""

    def __init__(self, names: Iterable[str] = (), *, files: bool = False) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.names = list(names)
        self.files = files

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        if looks_like_path(value):
            suffixes: tuple[str, ...] = ()
            if self.files:
                from bertui.core.data import FILE_KINDS  # not at start-up: data is not light

                suffixes = tuple(FILE_KINDS)
            return complete_path(value, files=suffixes)
        for name in self.names:
            if name.startswith(value) and name != value:
                return name
        return None
