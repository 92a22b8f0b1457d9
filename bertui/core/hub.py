"""Is the Hugging Face hub reachable? Answered in about two seconds at most.

The hub client retries for ~27 s before it gives up on an unreachable host; bertui asks this
first and, when the hub is out of reach, works from the local cache only (``HF_HUB_OFFLINE``).
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

_cached: bool | None = None
_lock = threading.Lock()


def offline_forced() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = 2.0) -> bool:
    """True if a TCP connection to the hub endpoint opens within ``timeout`` seconds.

    ``HF_HUB_OFFLINE=1`` answers False at once. The answer is cached for the process.
    """
    global _cached
    if offline_forced():
        return False
    with _lock:
        if _cached is not None:
            return _cached
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        parsed = urlparse(endpoint)
        host = parsed.hostname or "huggingface.co"
        port = parsed.port or (443 if parsed.scheme != "http" else 80)
        result: list[bool] = []

        def probe() -> None:
            try:
                with socket.create_connection((host, port), timeout=timeout):
                    result.append(True)
            except OSError:
                result.append(False)

        # getaddrinfo has no timeout of its own: run the probe in a daemon thread.
        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        thread.join(timeout + 0.5)
        _cached = bool(result and result[0])
        return _cached


def go_offline_if_unreachable(timeout: float = 2.0) -> bool:
    """Set ``HF_HUB_OFFLINE=1`` (before huggingface_hub is imported, where possible) when the
    hub cannot be reached, so every later hub call fails fast instead of retrying.
    Returns True if the hub is reachable."""
    online = hub_reachable(timeout)
    if not online:
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:  # huggingface_hub reads the variable at import; refresh its constant if loaded
            import sys

            constants = sys.modules.get("huggingface_hub.constants")
            if constants is not None:
                setattr(constants, "HF_HUB_OFFLINE", True)  # noqa: B010 - a module's constant
        except Exception:  # pragma: no cover
            pass
    return online
