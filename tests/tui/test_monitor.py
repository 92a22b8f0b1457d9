"""The Monitor follows a run directory that a test writes to, as a worker would."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time

from textual.widgets import ProgressBar, Sparkline

from bertui.core.events import append_event, make_event
from bertui.core.runs import atomic_write_json, create_run
from bertui.tui.screens.compare import CompareScreen
from bertui.tui.screens.confirm import ConfirmModal
from bertui.tui.screens.monitor import MonitorScreen
from bertui.tui.widgets.chart import Chart
from bertui.tui.widgets.hardware import CpuBlock, GpuBlock

from .conftest import FINISHED, RECORDED, Stall, build_app, plain, wait_until

GIB = 1024**3


def live_run(home):
    """A run whose worker is 'this process': running, with a fresh heartbeat."""
    run = create_run({"name": "live", "model": {"spec": "default"}, "data": {"train": "demo"},
                      "labels": {"id2label": {"0": "negative", "1": "positive"}},
                      "train": {"epochs": 2.0}}, home)
    set_status(run, "running")
    return run


def set_status(run, state, **extra):
    now = time.time()
    atomic_write_json(run.status_path, {"state": state, "pid": os.getpid(),
                                        "host": socket.gethostname(), "created": now - 60,
                                        "started": now - 60, "heartbeat": now, **extra})


def emit(run, type_, step=0, **fields):
    append_event(run.events_path, make_event(type_, step, **fields))


def cpu_sample(load):
    return {"cpu_percent": 50 + load, "ram_used": 8 * GIB, "ram_total": 16 * GIB,
            "rss": 2 * GIB, "gpus": []}


async def test_monitor_follows_appended_events(bertui_home, config_path):
    run = live_run(bertui_home)
    app = build_app(bertui_home, config_path, show_run=run.id, clock=time.time)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, MonitorScreen)
        assert "running" in plain(screen.query_one("#run-headline"))
        assert screen.follower.history.step == 0

        emit(run, "phase", 0, name="loading")
        emit(run, "run_start", 0, total_steps=40, epochs=2.0, n_train=320, n_eval=80,
             labels=["negative", "positive"], device="cpu", precision="fp32", batch_size=16,
             learning_rate=1e-4)
        emit(run, "baseline", 0, name="pretrained", accuracy=0.5, macro_f1=0.33)
        emit(run, "phase", 0, name="training")
        for step in range(1, 11):
            emit(run, "train", step, loss=0.7 - 0.02 * step, learning_rate=1e-4, epoch=step / 20)
            emit(run, "telemetry", step, **cpu_sample(step))
        emit(run, "progress", 10, total_steps=40, epoch=0.5, samples_per_s=123.4,
             tokens_per_s=5678.0, eta_s=30.0, elapsed_s=10.0)
        emit(run, "log", 10, level="warning", message="a warning from the worker")
        # the follower polls the log, and the clock line has its own timer: wait for both
        await wait_until(pilot, lambda: "step 10/40" in plain(screen.query_one("#run-clock")))

        history = screen.follower.history
        assert history.step == 10 and len(history.train_loss) == 10
        bar = screen.query_one("#run-progress", ProgressBar)
        assert bar.total == 40 and bar.progress == 10
        clock = plain(screen.query_one("#run-clock"))
        assert "step 10/40" in clock and "training" in clock
        assert "ETA" in clock and "ETA —" not in clock
        throughput = plain(screen.query_one("#run-throughput"))
        assert "123.4" in throughput and "5.7k" in throughput
        assert "cpu:fp32" not in plain(screen.query_one("#run-headline"))
        assert "cpu fp32" in plain(screen.query_one("#run-headline"))
        # no GPU: the CPU/RAM panel, with a history
        assert not screen.query(GpuBlock)
        cpu = screen.query_one(CpuBlock)
        assert list(cpu.query_one("#cpu-util").query_one(Sparkline).data)[-1] == 60
        assert "8.0 GiB / 16.0 GiB" in str(cpu.query_one("#cpu-ram .meter-value").content)
        assert screen.query_one("#loss-chart", Chart).draws >= 1
        assert "a warning from the worker" in "\n".join(
            str(line.text) for line in screen.query_one("#run-log").lines)
        assert screen.check_action("cancel_run", ()) is True
        assert screen.check_action("compare", ()) is False

        # the run ends
        shutil.copy(RECORDED / FINISHED / "metrics.json", run.metrics_path)
        emit(run, "eval", 40, epoch=2.0, eval_loss=0.3, accuracy=0.9, macro_f1=0.9)
        emit(run, "run_end", 40, state="finished", error=None)
        set_status(run, "finished", ended=time.time())
        await wait_until(pilot, lambda: screen.follower.state == "finished")
        assert screen.check_action("compare", ()) is True
        assert screen.check_action("cancel_run", ()) is False
        assert any("finished" in str(n.message) for n in app._notifications)
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, CompareScreen)


async def test_monitor_tolerates_a_half_written_line(bertui_home, config_path):
    run = live_run(bertui_home)
    emit(run, "train", 1, loss=0.5, epoch=0.1)
    with open(run.events_path, "a") as fh:
        fh.write('{"v":1,"type":"train","time":1,"step":2,"lo')
    app = build_app(bertui_home, config_path, show_run=run.id, clock=time.time)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        history = app.screen.follower.history
        assert [s for s, _ in history.train_loss] == [1]
        with open(run.events_path, "a") as fh:
            fh.write('ss":0.4,"epoch":0.2}\n')
        await wait_until(pilot, lambda: len(history.train_loss) == 2)
        assert [s for s, _ in history.train_loss] == [1, 2]


async def test_gpu_panel_shows_each_gpu_with_history(bertui_home, config_path):
    run = live_run(bertui_home)
    for step in range(5):
        emit(run, "telemetry", step, cpu_percent=10, ram_used=GIB, ram_total=4 * GIB, rss=GIB,
             gpus=[{"index": i, "name": f"GPU-{i}", "util": 10 * step + i,
                    "mem_used": (step + 1) * GIB, "mem_total": 80 * GIB, "temp": 40 + step,
                    "power": 100.0 + step, "power_limit": 700.0, "proc_mem": GIB}
                   for i in range(2)])
    app = build_app(bertui_home, config_path, show_run=run.id, clock=time.time)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: len(app.screen.query(GpuBlock)) == 2 and len(
            app.screen.query_one("#gpu-1-util").query_one(Sparkline).data) == 5)
        blocks = list(app.screen.query(GpuBlock))
        assert [b.index for b in blocks] == [0, 1]
        assert not app.screen.query(CpuBlock)
        util = app.screen.query_one("#gpu-1-util")
        assert list(util.query_one(Sparkline).data) == [1, 11, 21, 31, 41]
        assert "41%" in str(util.query_one(".meter-value").content)
        title = plain(blocks[0].query_one(".gpu-title"))
        assert "GPU-0" in title and "this run 1.0 GiB" in title
        temp = app.screen.query_one("#gpu-0-temp .meter-value")
        assert "44°C" in str(temp.content)


async def test_cancel_asks_first(bertui_home, config_path, monkeypatch):
    cancelled = []
    monkeypatch.setattr("bertui.core.launch.cancel_run", lambda run, wait=0.0: cancelled.append(
        run.id) or True)
    run = live_run(bertui_home)
    app = build_app(bertui_home, config_path, show_run=run.id, clock=time.time)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, MonitorScreen)
        assert cancelled == []
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        await app.workers.wait_for_complete()
        assert cancelled == [run.id]


async def test_a_lost_run_offers_resume(bertui_home, config_path):
    run = live_run(bertui_home)
    atomic_write_json(run.status_path, {"state": "running", "pid": 2**22 + 12345,
                                        "host": socket.gethostname(), "created": 1.0,
                                        "started": 1.0, "heartbeat": 1.0})
    app = build_app(bertui_home, config_path, show_run=run.id, clock=time.time)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert screen.follower.state == "lost"
        problem = plain(screen.query_one("#run-problem"))
        assert "lost" in problem and "Press r to resume" in problem
        assert screen.check_action("resume", ()) is True
        assert screen.check_action("cancel_run", ()) is False


async def test_a_run_lost_to_a_hung_worker_says_so(bertui_home, config_path):
    """Its heartbeat is minutes old but its pid is alive (this test process stands in)."""
    import psutil

    run = live_run(bertui_home)
    me = psutil.Process()
    atomic_write_json(run.status_path, {"state": "running", "pid": me.pid,
                                        "pid_started": me.create_time(),
                                        "host": socket.gethostname(), "created": 1.0,
                                        "started": 1.0, "heartbeat": time.time() - 600})
    app = build_app(bertui_home, config_path, show_run=run.id, clock=time.time)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.screen.follower.state == "lost"
        problem = plain(app.screen.query_one("#run-problem"))
        assert f"the worker (pid {me.pid}) is alive but has written nothing for 10m" in problem
        assert f"kill {me.pid}" in problem and "is gone" not in problem


async def test_reattach_replays_the_whole_history(recorded_home, config_path):
    events = [json.loads(line) for line in
              (recorded_home / "runs" / FINISHED / "events.jsonl").read_text().splitlines()]
    app = build_app(recorded_home, config_path, show_run=FINISHED)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("m")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, MonitorScreen)
        history = screen.follower.history
        assert len(history.train_loss) == sum(e["type"] == "train" for e in events)
        assert len(history.evals) == 3
        assert history.step == 69
        clock = plain(screen.query_one("#run-clock"))
        assert "step 69/69" in clock and "elapsed 25s" in clock


def step_labels(chart: Chart) -> list[str]:
    """The labels under a chart's x axis, as the chart renders them."""
    lines = chart.render().plain.splitlines()
    axis = next(i for i, line in enumerate(lines) if "└" in line)
    return lines[axis + 1].split()


async def test_the_epoch_and_the_step_axis_read_as_people_write_them(bertui_home, config_path):
    """"2.87 / 3", not "2.869565217391304 / 3.0"; steps 0 20 40 60, not 17.2."""
    run = live_run(bertui_home)
    emit(run, "run_start", 0, total_steps=69, epochs=3.0, n_train=360, n_eval=100)
    emit(run, "baseline", 0, name="pretrained", accuracy=0.5, macro_f1=0.33)
    for step in range(1, 67):
        emit(run, "train", step, loss=0.7 - 0.005 * step, epoch=step * 3 / 69)
    emit(run, "eval", 23, epoch=1.0, eval_loss=0.4, accuracy=0.8, macro_f1=0.8)
    emit(run, "progress", 66, total_steps=69, epoch=2.869565217391304, samples_per_s=70.0)
    app = build_app(bertui_home, config_path, show_run=run.id, clock=time.time)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.follower.history.step == 66)
        await wait_until(pilot, lambda: "70.0" in plain(screen.query_one("#run-throughput")))
        assert plain(screen.query_one("#run-throughput")).splitlines()[-1] == "epoch      2.87 / 3"
        for chart_id in ("#loss-chart", "#accuracy-chart"):
            chart = screen.query_one(chart_id, Chart)
            await wait_until(pilot, lambda chart=chart: chart.draws >= 1)
            assert step_labels(chart) == ["0", "20", "40", "60"], chart_id


async def test_a_stalled_read_leaves_the_monitor_answering(bertui_home, config_path,
                                                           monkeypatch):
    """The events file stops answering (a network filesystem that hangs): the app still
    takes keys meanwhile, and the read, once it comes back, is not lost."""
    from bertui.core.events import EventReader

    run = live_run(bertui_home)
    stall = Stall(EventReader.read_new, when=lambda reader: reader.path == run.events_path)
    monkeypatch.setattr(EventReader, "read_new", stall)
    app = build_app(bertui_home, config_path, show_run=run.id, clock=time.time)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, MonitorScreen)
        emit(run, "train", 5, loss=0.5, epoch=0.1)
        stall.arm()
        await wait_until(pilot, stall.stalled.is_set)
        await pilot.press("x")  # cancel the run? asks first
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        stall.release()
        await pilot.press("n")
        await wait_until(pilot, lambda: stall.released)
        assert stall.released == [True]
        assert app.screen is screen
        await wait_until(pilot, lambda: screen.follower.history.step == 5)
