"""Hardware telemetry: GPUs through NVML (nvidia-ml-py), CPU and RAM through psutil.

``sample()`` returns one plain dict (the payload of a ``telemetry`` event). ``Sampler`` runs it
in a daemon thread at most once a second and hands each sample to a callback; ``Periodic`` is
that loop for any function (the worker's heartbeat runs in one of its own, so that a sample
that raises or hangs never delays it). No GPU, no NVML driver, or a GPU that stops answering:
the GPU list is empty and nothing raises.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

_nvml_state: bool | None = None  # None = not tried, True = ready, False = unavailable
_nvml_lock = threading.Lock()


def _nvml() -> Any:
    global _nvml_state
    with _nvml_lock:
        if _nvml_state is None:
            try:
                import pynvml

                pynvml.nvmlInit()
                _nvml_state = True
            except Exception:
                _nvml_state = False
        if not _nvml_state:
            return None
        import pynvml

        return pynvml


def _uuid(nv: Any, handle: Any) -> str | None:
    try:
        value = nv.nvmlDeviceGetUUID(handle)
        return value.decode() if isinstance(value, bytes) else str(value)
    except Exception:
        return None


def visible_gpus(env: str | None = None) -> list[str] | None:
    """The NVML UUIDs of the GPUs CUDA shows this process, in CUDA's order: those that
    ``CUDA_VISIBLE_DEVICES`` (or ``env``) names, by index or by (a prefix of) their UUID, up
    to the first entry CUDA would stop at; every GPU when it is unset. NVML itself ignores
    that variable. None when NVML is not there."""
    nv = _nvml()
    if nv is None:
        return None
    try:
        uuids = [_uuid(nv, nv.nvmlDeviceGetHandleByIndex(i))
                 for i in range(nv.nvmlDeviceGetCount())]
    except Exception:
        return None
    return choose_visible(uuids, os.environ.get("CUDA_VISIBLE_DEVICES") if env is None else env)


def choose_visible(uuids: list[str | None], spec: str | None) -> list[str]:
    """Of the machine's GPUs (their UUIDs in NVML's order), those a ``CUDA_VISIBLE_DEVICES``
    value ``spec`` shows, in its order (see ``visible_gpus``)."""
    if spec is None:
        return [u for u in uuids if u]
    chosen: list[str] = []
    for entry in (e.strip() for e in spec.split(",")):
        if entry.isdigit() and int(entry) < len(uuids):
            found = uuids[int(entry)]
        else:
            matches = [u for u in uuids if u and entry and u.startswith(entry)]
            found = matches[0] if len(matches) == 1 else None
        if not found or found in chosen:
            break  # CUDA stops at the first entry it cannot use
        chosen.append(found)
    return chosen


def gpu_samples(pid: int | None = None, uuids: list[str] | None = None,
                pids: list[int] | None = None) -> list[dict[str, Any]]:
    """Utilisation, memory, temperature and power of each GPU (of those ``uuids`` names, in
    that order and numbered so, where given: a run's GPUs), plus the memory that process
    ``pid`` (default: this one), or all of ``pids`` (a run's ranks), hold on it."""
    nv = _nvml()
    if nv is None:
        return []
    mine = set(pids or [pid or os.getpid()])
    gpus = []
    try:
        count = len(uuids) if uuids is not None else nv.nvmlDeviceGetCount()
    except Exception:
        return []
    for index in range(count):
        entry: dict[str, Any] = {"index": index}
        try:
            if uuids is not None:
                handle = nv.nvmlDeviceGetHandleByUUID(uuids[index])
            else:
                handle = nv.nvmlDeviceGetHandleByIndex(index)
        except Exception:
            continue
        entry["uuid"] = uuids[index] if uuids is not None else _uuid(nv, handle)
        for key, read in (
            ("name", lambda h: nv.nvmlDeviceGetName(h)),
            ("util", lambda h: nv.nvmlDeviceGetUtilizationRates(h).gpu),
            ("mem_used", lambda h: nv.nvmlDeviceGetMemoryInfo(h).used),
            ("mem_total", lambda h: nv.nvmlDeviceGetMemoryInfo(h).total),
            ("temp", lambda h: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
            ("power", lambda h: nv.nvmlDeviceGetPowerUsage(h) / 1000.0),
            ("power_limit", lambda h: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0),
        ):
            try:
                value = read(handle)
                entry[key] = value.decode() if isinstance(value, bytes) else value
            except Exception:
                entry[key] = None
        entry["proc_mem"] = _process_gpu_memory(nv, handle, mine)
        gpus.append(entry)
    return gpus


def _process_gpu_memory(nv: Any, handle: Any, pids: set[int]) -> int | None:
    try:
        procs = nv.nvmlDeviceGetComputeRunningProcesses(handle)
    except Exception:
        return None
    total: int | None = 0
    for proc in procs:
        if proc.pid in pids:
            used = getattr(proc, "usedGpuMemory", None)
            if used is None:
                return None
            total = (total or 0) + int(used)
    return total


def sample(pid: int | None = None, gpus: list[str] | None = None,
           pids: list[int] | None = None) -> dict[str, Any]:
    """One telemetry reading: CPU %, RAM used/total, the process's RSS, and each GPU (those
    ``gpus`` names by UUID, where given; ``pids``: the processes whose GPU memory counts)."""
    import psutil

    vm = psutil.virtual_memory()
    try:
        rss = psutil.Process(pid or os.getpid()).memory_info().rss
    except Exception:
        rss = None
    return {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "ram_used": vm.total - vm.available,
        "ram_total": vm.total,
        "rss": rss,
        "gpus": gpu_samples(pid, gpus, pids),
    }


class Periodic:
    """Calls ``tick()`` every ``interval`` seconds in a daemon thread of its own. An exception
    in one call is swallowed (it must never take a run down) and the next call comes on time;
    ``stop()`` ends the loop and joins the thread."""

    def __init__(self, tick: Callable[[], None], interval: float, name: str) -> None:
        self.tick = tick
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> Periodic:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - see the class docstring
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


class Sampler(Periodic):
    """Calls ``callback(sample())`` every ``interval`` seconds (≥ 1 s) in a daemon thread. A
    sample that raises (a psutil or NVML error) is skipped; it never reaches ``callback``."""

    def __init__(self, callback: Callable[[dict[str, Any]], None], interval: float = 2.0,
                 gpus: Callable[[], tuple[list[str] | None, list[int] | None]] | None = None
                 ) -> None:
        """``gpus``: what to sample, asked at every tick (a run's GPU UUIDs and its ranks'
        pids; each None: every GPU, this process)."""
        def tick() -> None:
            uuids, pids = gpus() if gpus is not None else (None, None)
            callback(sample(None, uuids, pids))

        super().__init__(tick, max(1.0, interval), "bertui-telemetry")

    def start(self) -> Sampler:
        import psutil

        psutil.cpu_percent(interval=None)  # prime: the first reading is against this moment
        super().start()
        return self
