"""The energy an arm used, where the hardware reports it.

- On GPUs: NVML's energy counter of each GPU the run uses
  (``nvmlDeviceGetTotalEnergyConsumption``, millijoules since the driver loaded; Volta and
  newer), through nvidia-ml-py. The whole GPU is counted: another process on the same GPU
  counts too.
- On CPU: the RAPL counters of the CPU packages under ``/sys/class/powercap``
  (``intel-rapl:N/energy_uj``, AMD's too), where this user may read them (Linux makes them
  root-only by default since 5.10). A counter wraps at its ``max_energy_range_uj`` (about
  262 kJ: half an hour at 150 W), so the meter reads it every ``POLL_SECONDS`` in a thread of
  its own and adds the steps up. The whole package is counted, other processes included.
- Anything else is "not measured", with the reason (``Energy.reason``).

``EnergyMeter(gpus)`` is started before an arm and stopped after it (the engine does it); a
meter that cannot measure says why and never raises. ``BERTUI_POWERCAP_ROOT`` (or the
``powercap_root`` argument) points the RAPL reader at another tree (tests use a fake one).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POWERCAP_ENV = "BERTUI_POWERCAP_ROOT"
POWERCAP_ROOT = Path("/sys/class/powercap")
POLL_SECONDS = 20.0  # well under the fastest RAPL wrap (about 262 kJ at 400 W: 11 minutes)
# Top-level RAPL zones (a package, or the platform's "psys"); their subzones (core, uncore,
# dram: "intel-rapl:0:0") are parts of them, and the "-mmio" twins repeat them.
ZONE = re.compile(r"^[a-z]+-rapl:\d+$")
JOULES_PER_WH = 3600.0


@dataclass(frozen=True)
class Energy:
    """What a meter measured: ``wh`` (None: not measured), what measured it, or why not."""

    wh: float | None
    source: str | None = None  # "NVML, 1 GPU", "RAPL, 2 CPU packages"
    reason: str | None = None  # why not measured

    def as_cost(self) -> dict[str, Any]:
        """The energy fields of an arm's ``cost`` in metrics.json."""
        if self.wh is None:
            return {"energy_wh": None, "energy_reason": self.reason or "not measured"}
        return {"energy_wh": round(self.wh, 4), "energy_source": self.source}


class _Rapl:
    """The top-level RAPL zones of a powercap tree: their counters, read with wrap-around."""

    def __init__(self, root: Path) -> None:
        try:
            zones = sorted(p for p in root.iterdir() if ZONE.match(p.name))
        except OSError:
            zones = []
        if not zones:
            raise OSError(f"no RAPL counters in {root} (no powercap driver here, or a VM)")
        names = {z: _read_text(z / "name") or z.name for z in zones}
        packages = [z for z in zones if names[z] != "psys"]
        self.zones = packages or zones  # psys includes the packages: never both
        self.ranges = [_read_int(z / "max_energy_range_uj") for z in self.zones]
        try:
            self.last = self.read()
        except PermissionError:
            raise PermissionError(f"the RAPL counters in {root} are readable by root only "
                                  "(chmod a+r …/energy_uj to measure)") from None
        self.joules = 0.0
        kind = "CPU packages" if packages else "platform counters"
        self.source = f"RAPL, {len(self.zones)} {kind if len(self.zones) > 1 else kind[:-1]}"

    def read(self) -> list[int]:
        return [int((z / "energy_uj").read_text().strip()) for z in self.zones]

    def step(self) -> None:
        """Add the energy since the last reading (a counter below its last value wrapped)."""
        now = self.read()
        for i, (before, after) in enumerate(zip(self.last, now, strict=True)):
            delta = after - before
            if delta < 0:
                delta += self.ranges[i] or 0
            self.joules += max(0, delta) / 1e6
        self.last = now


class _Nvml:
    """The energy counters of the GPUs a run uses (by UUID where known, else by index)."""

    def __init__(self, gpus: list[str | int]) -> None:
        try:
            import pynvml
        except ImportError:
            raise OSError("nvidia-ml-py is not installed") from None
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, …
            raise OSError(f"NVML is not available ({exc})") from None
        self.nv = pynvml
        self.handles = [self._handle(g) for g in gpus]
        try:
            self.first = self.read()
        except Exception as exc:  # NVMLError_NotSupported on GPUs before Volta
            raise OSError(f"the GPU does not report its energy (NVML: {exc})") from None
        self.joules = 0.0
        self.source = f"NVML, {len(gpus)} GPU{'s' if len(gpus) != 1 else ''}"

    def _handle(self, gpu: str | int) -> Any:
        if isinstance(gpu, str):
            return self.nv.nvmlDeviceGetHandleByUUID(gpu)
        return self.nv.nvmlDeviceGetHandleByIndex(int(gpu))

    def read(self) -> list[int]:
        return [int(self.nv.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self.handles]

    def step(self) -> None:
        """The energy since the meter started (a 64-bit millijoule counter: no wrap)."""
        self.joules = sum(max(0, b - a) for a, b in zip(self.first, self.read(), strict=True))
        self.joules /= 1e3


class EnergyMeter:
    """Measures the energy between ``start()`` and ``stop()``: the GPUs ``gpus`` names (NVML
    UUIDs such as ``"GPU-…"``, or indices) when it names any, else the CPU's RAPL counters."""

    def __init__(self, gpus: list[str | int] | None = None, *,
                 powercap_root: Path | None = None, poll_seconds: float = POLL_SECONDS) -> None:
        self.gpus = list(gpus or [])
        env = os.environ.get(POWERCAP_ENV)
        self.root = Path(powercap_root or env or POWERCAP_ROOT)
        self.poll_seconds = poll_seconds
        self.counter: _Rapl | _Nvml | None = None
        self.reason: str | None = None
        self._lock = threading.Lock()
        self._poller: Any = None
        self._result: Energy | None = None

    def start(self) -> EnergyMeter:
        try:
            self.counter = _Nvml(self.gpus) if self.gpus else _Rapl(self.root)
        except Exception as exc:  # noqa: BLE001 - a meter never takes a run down
            self.counter, self.reason = None, str(exc) or type(exc).__name__
            return self
        if isinstance(self.counter, _Rapl):
            from bertui.core.telemetry import Periodic

            self._poller = Periodic(self._step, self.poll_seconds, "bertui-energy").start()
        return self

    def _step(self) -> None:
        with self._lock:
            if self.counter is not None:
                self.counter.step()

    def stop(self) -> Energy:
        """What was measured from ``start()`` to the first ``stop()`` (later calls repeat it)."""
        if self._result is None:
            self._result = self._stopped()
        return self._result

    def _stopped(self) -> Energy:
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        if self.counter is None:
            return Energy(None, reason=self.reason)
        try:
            self._step()
        except Exception as exc:  # noqa: BLE001 - a counter that went away meanwhile
            return Energy(None, reason=f"the energy counter could not be read ({exc})")
        return Energy(self.counter.joules / JOULES_PER_WH, self.counter.source)


def cuda_gpus(count: int) -> list[str | int]:
    """NVML's names for this process's CUDA devices 0 … count−1: their UUIDs (NVML numbers
    the GPUs its own way and ignores CUDA_VISIBLE_DEVICES), or plain indices where torch does
    not tell them."""
    try:
        import torch

        return [f"GPU-{torch.cuda.get_device_properties(i).uuid}" for i in range(count)]
    except Exception:  # noqa: BLE001 - an older torch, or no CUDA after all
        return list(range(count))


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read_text(path)
    return int(text) if text and text.isdigit() else None
