"""Small text formatters shared by the screens: durations, sizes, rates, percentages, plain
numbers such as epochs."""

from __future__ import annotations

import time


def duration(seconds: float | None) -> str:
    """``None`` → "—"; 42 → "42s"; 135 → "2m15s"; 7320 → "2h02m"."""
    if seconds is None or seconds < 0:
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def size(num_bytes: float | None) -> str:
    """Bytes in the largest binary unit that keeps the number readable ("1.4 GiB")."""
    if num_bytes is None:
        return "—"
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def count(number: float | None) -> str:
    """22713216 → "22.7M"; 4321 → "4.3k"."""
    if number is None:
        return "—"
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= threshold:
            return f"{number / threshold:.1f}{suffix}"
    return f"{number:g}"


def rate(value: float | None, unit: str = "/s") -> str:
    if value is None:
        return "—"
    return f"{count(value) if value >= 1000 else f'{value:.1f}'}{unit}"


def number(value: object, digits: int = 2) -> str:
    """A number as people write it: at most ``digits`` decimals, no trailing zeros
    (2.869565 → "2.87", 3.0 → "3", 0.5 → "0.5"); ``None`` → "—"; anything else as it is."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits > 0 else f"{value:.0f}"
    return "0" if text == "-0" else text


def percent(value: float | None, digits: int = 1) -> str:
    """A 0..1 fraction as a percentage ("93.0%")."""
    if value is None:
        return "—"
    return f"{100 * value:.{digits}f}%"


def score(value: float | None) -> str:
    """A 0..1 score with three decimals, or "—"."""
    return "—" if value is None else f"{value:.3f}"


def timestamp(epoch: float | None) -> str:
    """A wall time in local time, minute precision."""
    if not epoch:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))


def one_line(text: str, width: int | None = None) -> str:
    """Collapse whitespace; cut to ``width`` with an ellipsis."""
    text = " ".join(str(text).split())
    if width is not None and len(text) > width:
        return text[: max(0, width - 1)] + "…"
    return text


def short_timestamp(epoch: float | None) -> str:
    """A wall time as MM-DD HH:MM in local time."""
    if not epoch:
        return "—"
    return time.strftime("%m-%d %H:%M", time.localtime(epoch))


def clock_time(epoch: float | None) -> str:
    """A wall time as HH:MM:SS in local time."""
    if not epoch:
        return "--:--:--"
    return time.strftime("%H:%M:%S", time.localtime(epoch))
