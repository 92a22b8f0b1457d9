"""Time from launching ``bertui`` to its first screen, against a bare Textual app started the
same way, in a real terminal (tmux, 120×40); and the TUI's memory while it monitors a run.

Each launch starts a fresh tmux session running the command and polls ``capture-pane`` every
10 ms until the first screen's text is there. Median of ``--rounds`` launches each,
alternating. Then a real run is started (detached worker) and ``bertui show RUN`` monitors it:
its resident memory is read after ``--settle`` seconds, and whether torch got loaded.

    python bench/startup.py [--rounds 7] [--json]
Target: bertui / bare ≤ 1.3.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE_APP = """
from textual.app import App
from textual.widgets import Footer, Header, Static

class Bare(App):
    def compose(self):
        yield Header()
        yield Static("bare textual app ready")
        yield Footer()

Bare().run()
"""


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout


def start_session(name: str, command: str, env: dict) -> None:
    """A detached tmux session of 120×40 running ``command`` with ``env``."""
    prefix = " ".join(f"{k}={v}" for k, v in env.items())
    tmux_cmd = ["tmux", "new-session", "-d", "-s", name, "-x", "120", "-y", "40"]
    subprocess.run([*tmux_cmd, f"env {prefix} {command}"], check=True)


def time_to_screen(command: str, marker: str, env: dict, timeout: float = 30.0) -> float:
    session = f"bench{os.getpid()}{time.monotonic_ns() % 100000}"
    t0 = time.perf_counter()
    start_session(session, command, env)
    try:
        while time.perf_counter() - t0 < timeout:
            if marker in tmux("capture-pane", "-p", "-t", session):
                return time.perf_counter() - t0
            time.sleep(0.01)
        raise SystemExit(f"'{marker}' did not appear within {timeout}s for: {command}")
    finally:
        tmux("kill-session", "-t", session)
        time.sleep(0.2)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--settle", type=float, default=8.0)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if not shutil.which("tmux"):
        raise SystemExit("tmux is needed (apt-get install tmux)")
    bertui = str(Path(sys.executable).with_name("bertui"))
    # Byte-compile bertui as pip does when it installs a package (an editable install, or
    # PYTHONDONTWRITEBYTECODE=1, would otherwise compile its modules from source at each start).
    import compileall

    import bertui as package

    compileall.compile_dir(str(Path(package.__file__).parent), quiet=1)
    with tempfile.TemporaryDirectory(prefix="bertui-startup-") as tmp:
        bare = Path(tmp) / "bare.py"
        bare.write_text(BARE_APP)
        env = {
            "BERTUI_HOME": f"{tmp}/home",
            "XDG_CONFIG_HOME": f"{tmp}/config",
            "HF_HUB_OFFLINE": "1",
            "TERM": "xterm-256color",
        }
        times: dict[str, list[float]] = {"bertui": [], "bare": []}
        for i in range(a.rounds + 1):
            pair = [
                ("bertui", bertui, "New run"),
                ("bare", f"{sys.executable} {bare}", "bare textual app ready"),
            ]
            for name, cmd, marker in pair if i % 2 else reversed(pair):
                t = time_to_screen(cmd, marker, env)
                if i:  # the first round warms the disk cache
                    times[name].append(t)
        med = {k: statistics.median(v) for k, v in times.items()}

        # Memory while monitoring a real run.
        run_env = {**os.environ, **env}
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bertui",
                "train",
                "--dataset",
                "demo",
                "--epochs",
                "5",
                "--detach",
            ],
            env=run_env,
            capture_output=True,
            text=True,
            check=True,
        )
        run_id = out.stdout.strip()
        session = "benchmon"
        start_session(session, f"{bertui} show {run_id}", env)
        time.sleep(a.settle)
        import psutil

        pane_pid = int(tmux("display-message", "-p", "-t", session, "#{pane_pid}").strip())
        procs = [psutil.Process(pane_pid), *psutil.Process(pane_pid).children(recursive=True)]
        app = max(procs, key=lambda pr: pr.memory_info().rss)
        rss = app.memory_info().rss
        cpu = app.cpu_percent(interval=3.0)
        maps = Path(f"/proc/{app.pid}/maps").read_text()
        torch_loaded = "libtorch" in maps
        screen = tmux("capture-pane", "-p", "-t", session)
        tmux("kill-session", "-t", session)
        subprocess.run(
            [sys.executable, "-m", "bertui", "cancel", run_id],
            env=run_env,
            capture_output=True,
            check=False,
        )
    report = {
        "rounds": a.rounds,
        "bertui_s": round(med["bertui"], 3),
        "bare_s": round(med["bare"], 3),
        "ratio": round(med["bertui"] / med["bare"], 3),
        "all": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "monitor_rss_mb": round(rss / 2**20, 1),
        "monitor_cpu_percent": cpu,
        "torch_loaded_in_tui": torch_loaded,
        "monitor_title_seen": "Monitor" in screen,
    }
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"first screen: bertui {report['bertui_s']} s, bare Textual {report['bare_s']} s, "
            f"ratio {report['ratio']} (target ≤ 1.3; median of {a.rounds})"
        )
        print(
            f"monitoring a run: {report['monitor_rss_mb']} MiB resident, "
            f"{cpu:.1f} % CPU, torch loaded: {torch_loaded}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
