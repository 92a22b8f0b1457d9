"""Themes: the TOML files shipped in ``bertui.themes`` plus the user's own, validated into
``textual.theme.Theme``.

User themes live in ``<user config dir>/themes/*.toml`` (or ``*.yaml``). A file that is not a
valid theme is skipped and reported (the app shows a notification and keeps the default
theme). Chart colours come from the theme's ``variables`` (``chart-train``,
``model-finetuned``, ...) with a fallback on the theme's standard colours, so a built-in
Textual theme colours the charts too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

from textual.color import Color, ColorParseError
from textual.theme import Theme

DEFAULT_THEME = "bertui-night"
COLOR_FIELDS = ("primary", "secondary", "warning", "error", "success", "accent", "foreground",
                "background", "surface", "panel", "boost")
# Theme variables of our own, and the standard colour each one falls back on.
CHART_VARIABLES = {
    "chart-train": "primary",
    "chart-eval": "accent",
    "model-pretrained": "foreground-muted",
    "model-probe": "secondary",
    "model-finetuned": "success",
    "model-scratch": "warning",
    "model-tapt": "accent",
    "model-setfit": "primary",
}


class ThemeError(ValueError):
    """A theme file that cannot be used; the message names the file and the problem."""


def parse_theme(data: Any, source: str) -> Theme:
    """Validate a mapping (from YAML) into a Theme; raise ThemeError with one line."""
    if not isinstance(data, Mapping):
        raise ThemeError(f"{source}: a theme must be a mapping of names to colours")
    fields = {f.name for f in dataclasses.fields(Theme)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ThemeError(f"{source}: unknown theme key(s) {', '.join(map(str, unknown))}")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ThemeError(f"{source}: the theme has no name")
    if not data.get("primary"):
        raise ThemeError(f"{source}: the theme has no primary colour")
    for key in COLOR_FIELDS:
        if data.get(key) is not None:
            _check_color(data[key], f"{source}: {key}")
    variables = data.get("variables") or {}
    if not isinstance(variables, Mapping):
        raise ThemeError(f"{source}: variables must be a mapping")
    for key, value in variables.items():
        if key in CHART_VARIABLES:
            _check_color(value, f"{source}: variables.{key}")
    if "dark" in data and not isinstance(data["dark"], bool):
        raise ThemeError(f"{source}: dark must be true or false")
    kwargs = {k: v for k, v in data.items() if k != "variables"}
    kwargs["variables"] = {str(k): str(v) for k, v in variables.items()}
    try:
        return Theme(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ThemeError(f"{source}: {exc}") from exc


def _check_color(value: Any, where: str) -> None:
    try:
        Color.parse(str(value))
    except ColorParseError as exc:
        raise ThemeError(f"{where}: '{value}' is not a colour") from exc


THEME_SUFFIXES = (".toml", ".yaml", ".yml")


def _parse_text(text: str, suffix: str, source: str) -> Any:
    """A theme file's content: TOML (stdlib, what the built-ins use) or YAML (PyYAML is
    imported only for a YAML file: it costs ~25 ms of start-up)."""
    if suffix == ".toml":
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ThemeError(f"{source}: not valid TOML") from exc
    import yaml

    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise ThemeError(f"{source}: not valid YAML") from exc


def load_theme_file(path: Path) -> Theme:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ThemeError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return parse_theme(_parse_text(text, path.suffix.lower(), str(path)), str(path))


def builtin_themes() -> list[Theme]:
    """The themes shipped in the package (a broken one is a bug: it raises)."""
    themes = []
    for entry in sorted(files("bertui.themes").iterdir(), key=lambda e: e.name):
        suffix = Path(entry.name).suffix
        if suffix in THEME_SUFFIXES:
            data = _parse_text(entry.read_text(encoding="utf-8"), suffix, entry.name)
            themes.append(parse_theme(data, entry.name))
    return themes


def user_themes(config_dir: Path) -> tuple[list[Theme], list[str]]:
    """Themes from ``config_dir/themes``: (valid themes, one line per invalid file)."""
    folder = Path(config_dir) / "themes"
    themes: list[Theme] = []
    problems: list[str] = []
    if not folder.is_dir():
        return themes, problems
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in THEME_SUFFIXES:
            continue
        try:
            themes.append(load_theme_file(path))
        except ThemeError as exc:
            problems.append(str(exc))
    return themes, problems


def chart_color(variables: Mapping[str, str], name: str) -> tuple[int, int, int]:
    """An RGB triple for plotext from the app's theme variables (``app.theme_variables``)."""
    value = variables.get(name) or variables.get(CHART_VARIABLES.get(name, name)) or \
        variables.get("foreground") or "white"
    return _solid(variables, value).rgb


def theme_color(variables: Mapping[str, str], name: str) -> str:
    """A colour from the theme as a hex string, for Rich styles built in Python."""
    value = variables.get(name) or variables.get(CHART_VARIABLES.get(name, name)) or \
        variables.get("foreground") or "white"
    return _solid(variables, value).hex


def _solid(variables: Mapping[str, str], value: str) -> Color:
    """Parse a colour; a translucent one is blended onto the theme's background."""
    try:
        color = Color.parse(value)
    except ColorParseError:
        color = Color.parse(variables.get("foreground", "white"))
    if color.a < 1:
        try:
            background = Color.parse(variables.get("background", "black"))
        except ColorParseError:
            background = Color(0, 0, 0)
        color = background + color
    return color


STATE_COLORS = {"running": "primary", "queued": "primary", "finished": "success",
                "failed": "error", "cancelled": "warning", "lost": "warning"}


def state_style(variables: Mapping[str, str], state: str) -> str:
    """A Rich style for a run state (running, finished, failed, …) in the current theme."""
    color = theme_color(variables, STATE_COLORS.get(state, "foreground"))
    return f"bold {color}" if state in ("running", "failed", "lost") else color
