"""The hardware panel of the Monitor: each GPU's utilisation, memory, temperature and power
with a short history (sparklines) and the run's own GPU memory; CPU and RAM when the run has
no GPU. It is fed ``telemetry`` events (see bertui.core.telemetry.sample)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Label, Sparkline, Static

from bertui.tui.format import size


def _ratio(used: Any, total: Any) -> float | None:
    if isinstance(used, (int, float)) and isinstance(total, (int, float)) and total:
        return used / total
    return None


class Meter(Horizontal):
    """A label with the current value and a sparkline with the history."""

    def __init__(self, name: str, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="meter")
        self.meter_name = name

    def compose(self) -> ComposeResult:
        yield Label(self.meter_name, classes="meter-name")
        yield Label("—", classes="meter-value")
        yield Sparkline([], summary_function=max, classes="meter-spark")

    def show(self, text: str, history: list[float]) -> None:
        self.query_one(".meter-value", Label).update(text)
        self.query_one(Sparkline).data = list(history)  # reassign: data is reactive


class GpuBlock(Vertical):
    """One GPU: a title line and four meters."""

    def __init__(self, index: int) -> None:
        super().__init__(id=f"gpu-{index}", classes="gpu-block")
        self.index = index

    def compose(self) -> ComposeResult:
        yield Static("", classes="gpu-title")
        yield Meter("util", id=f"gpu-{self.index}-util")
        yield Meter("mem", id=f"gpu-{self.index}-mem")
        yield Meter("temp", id=f"gpu-{self.index}-temp")
        yield Meter("power", id=f"gpu-{self.index}-power")

    def show(self, samples: list[dict[str, Any]]) -> None:
        def series(key: str) -> list[float]:
            return [float(s[key]) for s in samples if isinstance(s.get(key), (int, float))]

        now = samples[-1]
        own = now.get("proc_mem")
        title = f"GPU {self.index} · {now.get('name') or 'unknown'}"
        if isinstance(own, (int, float)):
            title += f" · this run {size(own)}"
        self.query_one(".gpu-title", Static).update(title)
        util = now.get("util")
        self.query_one(f"#gpu-{self.index}-util", Meter).show(
            f"{util:.0f}%" if isinstance(util, (int, float)) else "—", series("util"))
        mem = [100 * r for s in samples
               if (r := _ratio(s.get("mem_used"), s.get("mem_total"))) is not None]
        self.query_one(f"#gpu-{self.index}-mem", Meter).show(
            f"{size(now.get('mem_used'))} / {size(now.get('mem_total'))}", mem)
        temp = now.get("temp")
        self.query_one(f"#gpu-{self.index}-temp", Meter).show(
            f"{temp:.0f}°C" if isinstance(temp, (int, float)) else "—", series("temp"))
        power, limit = now.get("power"), now.get("power_limit")
        text = f"{power:.0f} W" if isinstance(power, (int, float)) else "—"
        if isinstance(limit, (int, float)) and isinstance(power, (int, float)):
            text += f" / {limit:.0f}"
        self.query_one(f"#gpu-{self.index}-power", Meter).show(text, series("power"))


class CpuBlock(Vertical):
    """CPU utilisation, RAM and the worker's resident memory, when there is no GPU."""

    def __init__(self) -> None:
        super().__init__(id="cpu-block", classes="gpu-block")

    def compose(self) -> ComposeResult:
        yield Static("CPU · no GPU in use", classes="gpu-title")
        yield Meter("cpu", id="cpu-util")
        yield Meter("ram", id="cpu-ram")
        yield Meter("worker", id="cpu-rss")

    def show(self, samples: list[dict[str, Any]]) -> None:
        now = samples[-1]
        cpu = [float(s["cpu_percent"]) for s in samples
               if isinstance(s.get("cpu_percent"), (int, float))]
        value = now.get("cpu_percent")
        self.query_one("#cpu-util", Meter).show(
            f"{value:.0f}%" if isinstance(value, (int, float)) else "—", cpu)
        ram = [100 * r for s in samples
               if (r := _ratio(s.get("ram_used"), s.get("ram_total"))) is not None]
        self.query_one("#cpu-ram", Meter).show(
            f"{size(now.get('ram_used'))} / {size(now.get('ram_total'))}", ram)
        rss = [float(s["rss"]) for s in samples if isinstance(s.get("rss"), (int, float))]
        self.query_one("#cpu-rss", Meter).show(size(now.get("rss")), rss)


class HardwarePanel(VerticalScroll):
    """Shows the newest telemetry with its history; GPUs if the run has any, else CPU/RAM."""

    def compose(self) -> ComposeResult:
        yield Static("waiting for telemetry…", id="hw-empty")

    async def update_samples(self, samples: Iterable[dict[str, Any]]) -> None:
        samples = list(samples)
        if not samples:
            return
        latest = samples[-1]
        gpus = latest.get("gpus") or []
        wanted = [f"gpu-{g.get('index', i)}" for i, g in enumerate(gpus)] or ["cpu-block"]
        present = [child.id for child in self.children if child.id != "hw-empty"]
        if present != wanted:
            await self.remove_children()
            blocks = ([GpuBlock(int(g.get("index", i))) for i, g in enumerate(gpus)]
                      or [CpuBlock()])
            await self.mount_all(blocks)
        if gpus:
            for i, gpu in enumerate(gpus):
                index = int(gpu.get("index", i))
                history = [g for s in samples for g in (s.get("gpus") or [])
                           if g.get("index", None) == index]
                self.query_one(f"#gpu-{index}", GpuBlock).show(history or [gpu])
        else:
            self.query_one(CpuBlock).show(samples)
