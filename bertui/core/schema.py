"""The run schema: every run option as one typed field (default, bounds, help, form group),
and how ``config.toml`` is read and written through it.

(Being built: for now it holds the arms contract that the engine reads.)
"""

from __future__ import annotations

from typing import Any

# The arms a run can compare, in the order they run and are shown.
ARM_NAMES = ("pretrained", "probe", "finetuned")
DEFAULT_ARMS = ("pretrained", "probe", "finetuned")


def arms_of(config: dict[str, Any]) -> list[str]:
    """The arms a run's config names (top-level ``arms = [...]``). A config written before
    arms existed has none: it ran the three, less the probe where ``[train] probe = false``."""
    arms = config.get("arms")
    if isinstance(arms, list) and arms:
        return [str(a) for a in arms]
    probe = (config.get("train") or {}).get("probe", True)
    return [a for a in DEFAULT_ARMS if probe or a != "probe"]
