"""bertui.core.energy: the RAPL reader against a fake powercap tree (wrap-around, subzones and
twins left out, counters only root may read), the NVML reader with nvidia-ml-py absent and
with a stand-in module, and the cost fields a meter gives."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from bertui.core.energy import POWERCAP_ENV, Energy, EnergyMeter

RANGE = 262_143_328_850  # a real package's max_energy_range_uj


def zone(root: Path, name: str, label: str, energy: int, max_range: int = RANGE) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "name").write_text(f"{label}\n")
    (path / "energy_uj").write_text(f"{energy}\n")
    (path / "max_energy_range_uj").write_text(f"{max_range}\n")
    return path


def set_energy(path: Path, energy: int) -> None:
    (path / "energy_uj").write_text(f"{energy}\n")


@pytest.fixture
def powercap(tmp_path) -> Path:
    """Two packages, a core subzone of the first, an mmio twin and a psys zone: only the two
    packages count."""
    root = tmp_path / "powercap"
    zone(root, "intel-rapl:0", "package-0", 1_000_000)
    zone(root, "intel-rapl:1", "package-1", 5_000_000)
    zone(root, "intel-rapl:0:0", "core", 10)
    zone(root, "intel-rapl-mmio:0", "package-0", 1_000_000)
    zone(root, "intel-rapl:2", "psys", 0)
    return root


def test_rapl_adds_the_packages_and_follows_a_wrap(powercap):
    meter = EnergyMeter(powercap_root=powercap, poll_seconds=3600).start()
    # 3.6 kJ on package 0; package 1 wraps: from 5 J below its range to 3.6 kJ - 5 J past 0.
    set_energy(powercap / "intel-rapl:0", 1_000_000 + 3_600_000_000)
    set_energy(powercap / "intel-rapl:1", RANGE - 5_000_000)
    meter._step()  # a poll between the two readings (the thread does it every poll_seconds)
    set_energy(powercap / "intel-rapl:1", 3_600_000_000 - 5_000_000 - 1)
    set_energy(powercap / "intel-rapl:0:0", 10**12)  # a subzone: part of package 0, not extra
    set_energy(powercap / "intel-rapl:2", 10**12)  # psys: the platform, packages included
    energy = meter.stop()
    before_wrap = (RANGE - 5_000_000 - 5_000_000) / 1e6
    after_wrap = (5_000_000 + 3_600_000_000 - 5_000_000 - 1) / 1e6
    assert energy.wh == pytest.approx((3600 + before_wrap + after_wrap) / 3600)
    assert energy.source == "RAPL, 2 CPU packages"
    assert energy.as_cost() == {"energy_wh": round(energy.wh, 4),
                                "energy_source": "RAPL, 2 CPU packages"}


def test_rapl_root_comes_from_the_environment(powercap, monkeypatch):
    monkeypatch.setenv(POWERCAP_ENV, str(powercap))
    meter = EnergyMeter().start()
    set_energy(powercap / "intel-rapl:0", 1_000_000 + 36_000_000)  # 36 J = 0.01 Wh
    assert meter.stop().wh == pytest.approx(0.01)


def test_the_poller_thread_reads_the_counters(powercap):
    import time

    meter = EnergyMeter(powercap_root=powercap, poll_seconds=0.05).start()
    set_energy(powercap / "intel-rapl:1", RANGE - 1_000_000)
    deadline = time.monotonic() + 10
    while meter.counter.last[1] != RANGE - 1_000_000 and time.monotonic() < deadline:
        time.sleep(0.02)
    set_energy(powercap / "intel-rapl:1", 1_000_000)  # wrapped after the poll saw it high
    wh = meter.stop().wh
    assert wh == pytest.approx((RANGE - 6_000_000 + 2_000_000) / 1e6 / 3600)


def test_rapl_not_measured_says_why(tmp_path, powercap, monkeypatch):
    energy = EnergyMeter(powercap_root=tmp_path / "none").start().stop()
    assert energy.wh is None and "no RAPL counters" in energy.reason
    assert energy.as_cost() == {"energy_wh": None, "energy_reason": energy.reason}
    def denied(self):  # a real tree as a user sees it since Linux 5.10 (tests run as root)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("bertui.core.energy._Rapl.read", denied)
    energy = EnergyMeter(powercap_root=powercap).start().stop()
    assert energy.wh is None and "readable by root only" in energy.reason


def test_nvml_absent_is_not_measured(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    energy = EnergyMeter(["GPU-0000"]).start().stop()
    assert energy == Energy(None, reason="nvidia-ml-py is not installed")


def fake_nvml(readings: dict[str, list[int]], supported: bool = True) -> types.ModuleType:
    """A stand-in for pynvml: each UUID's counter answers the next of its readings (mJ)."""
    nv = types.ModuleType("pynvml")
    nv.nvmlInit = lambda: None
    nv.nvmlDeviceGetHandleByUUID = lambda uuid: uuid
    nv.nvmlDeviceGetHandleByIndex = lambda i: f"GPU-{i}"

    def energy(handle):
        if not supported:
            raise RuntimeError("Not Supported")
        return readings[handle].pop(0)

    nv.nvmlDeviceGetTotalEnergyConsumption = energy
    return nv


def test_nvml_sums_the_gpus_the_run_uses(monkeypatch):
    nv = fake_nvml({"GPU-a": [10_000, 3_610_000], "GPU-b": [5, 1_800_005], "GPU-c": [0, 10**9]})
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    energy = EnergyMeter(["GPU-a", "GPU-b"]).start().stop()  # GPU-c is not the run's
    assert energy.wh == pytest.approx((3600 + 1800) / 3600)
    assert energy.source == "NVML, 2 GPUs"
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml({}, supported=False))
    energy = EnergyMeter([0]).start().stop()
    assert energy.wh is None and "does not report its energy" in energy.reason
