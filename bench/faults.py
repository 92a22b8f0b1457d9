"""bertui's reliability figures, measured for real (run by hand, not in CI).

    .venv/bin/python bench/faults.py [--kills 10] [--tui-kills 2] [--seed 0] [--json] [--keep]

On a tiny random BERT (built here, in a temp folder) and the embedded demo data, on CPU:

1. **Bad inputs** — every case of the catalogue in ``tests/test_bad_input.py`` (the same list
   the tests use) is run through the real ``bertui`` CLI against a home that holds a finished
   run. Counted: tried; *answered with one line* (exit 2, stderr exactly one non-empty line);
   answered right (also names the problem, stdout empty, home byte-for-byte unchanged, no run
   started); tracebacks seen (the word "Traceback" anywhere in stdout or stderr).

2. **Worker kills** — ``--kills N`` runs (1 epoch, batch 8, so 45 steps, a checkpoint every
   ~0.3 s). Each is SIGKILLed at a random point: a random training step in 0..total-1, where
   0 means while it is still loading or measuring the baselines (before any checkpoint). A
   worker to be killed at step N is started with ``BERTUI_TEST_PAUSE_AT_STEP=N`` (see
   bertui.worker): it pauses at the end of step N, before that step's log line and checkpoint,
   and is killed there, so the kill lands at that step however fast the CPU is. Then
   ``bertui runs --json`` must show it ``lost``; ``bertui resume`` continues it in the same run
   folder; it must finish with a complete metrics.json (pretrained, probe, finetuned, train) and
   a model that ``transformers.pipeline`` loads and runs. Counted: kills, shown as lost, resumed
   to completion, events lost, log gaps, steps redone.

   *Events lost* — the worker appends events.jsonl one whole line per write(2). Right after the
   killed worker is gone, the complete lines of events.jsonl are recorded (a torn last line,
   if any, is counted separately as ``torn_tail_bytes``). After the resumed run has finished,
   an event counts as lost if its exact line is no longer in the file (multiset difference of
   lines). ``progress``/``train`` steps lost is the same test on the (type, step) pairs of
   those events, the definition the issue asks for. ``prefix_intact`` says whether the
   pre-kill file is a byte-for-byte prefix of the final one (the log was only appended to).
   *Log gaps* are training steps 1..total with no ``train`` event in the final log (a step the
   resumed worker neither kept nor redid). *Steps redone* is the kill step minus the step of the
   checkpoint resumed from: the work a kill costs (bounded by the checkpoint interval,
   ``--checkpoint-minutes``, default 2 min, plus the end-of-epoch save).

3. **TUI kills** — ``--tui-kills N`` runs started detached; while each trains, ``bertui`` is
   opened in tmux (120x40, private socket, the same BERTUI_HOME), and once it has drawn, its
   pane is killed: SIGKILL to the pane's process (odd kills) or the whole tmux server killed,
   which sends SIGHUP like a dropped SSH connection (even kills). Counted: TUI kills, TUI drew
   before the kill, runs finished (by the very worker that was running, no resume needed).
   Skipped when tmux is missing.

Prints a compact table, or everything as JSON with ``--json``. Exit 0 when every figure is as
it should be, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from test_bad_input import CASES, make_bad_files, run_case  # noqa: E402

from bertui.core.runs import (  # noqa: E402
    ACTIVE_STATES,
    CHECKPOINTS_DIR,
    EVENTS_FILE,
    METRICS_FILE,
    MODEL_DIR,
    STATUS_FILE,
    Run,
    last_checkpoint,
    pid_alive,
    read_json,
)
from bertui.worker import PAUSE_ENV  # noqa: E402
from conftest import bertui_cmd, make_tiny_model, run_bertui  # noqa: E402

RUN_ARGS = (
    "--dataset",
    "demo",
    "--epochs",
    "1",
    "--batch-size",
    "8",
    "--checkpoint-minutes",
    "0.005",
)
RUN_TIMEOUT = 300.0


# --- small helpers ---------------------------------------------------------------------------


def wait_for(predicate, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def wait_done(path: Path, timeout: float = RUN_TIMEOUT) -> str:
    run = Run.load(path)
    state = wait_for(lambda: (s := run.refresh().state) not in ACTIVE_STATES and s, timeout, 0.25)
    return state or run.refresh().state


def lines_of(raw: bytes) -> list[bytes]:
    return [line for line in raw.split(b"\n") if line.strip()]


def parse(lines: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            out.append(event)
    return out


def train_steps(path: Path) -> list[int]:
    raw = (path / EVENTS_FILE).read_bytes() if (path / EVENTS_FILE).exists() else b""
    return [e["step"] for e in parse(lines_of(raw)) if e.get("type") == "train"]


def start_detached(home: Path, model: Path, *extra: str, env: dict | None = None) -> Path:
    proc = run_bertui(
        "train", "--detach", "--model", str(model), *RUN_ARGS, *extra, home=home, timeout=180,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bertui train --detach failed: {proc.stderr.strip()}")
    return home / "runs" / proc.stdout.strip()


def running_pid(path: Path, timeout: float = 120) -> tuple[int, float] | None:
    def check():
        status = read_json(path / STATUS_FILE, {}) or {}
        if status.get("state") == "running" and status.get("pid"):
            return int(status["pid"]), float(status.get("pid_started") or 0) or None
        return None

    return wait_for(check, timeout, 0.02)


def paused_pid(path: Path, step: int, timeout: float = RUN_TIMEOUT) -> tuple[int, float] | None:
    """The pid of the run's worker once it pauses at ``step`` (None if it never does)."""

    def check():
        status = read_json(path / STATUS_FILE, {}) or {}
        if status.get("state") == "running" and status.get("paused_at_step") == step:
            return int(status["pid"]), float(status.get("pid_started") or 0) or None
        return None

    return wait_for(check, timeout, 0.02)


def demo_steps(batch_size: int = 8) -> int:
    """Training steps of one epoch on the demo data (the bench's runs)."""
    from bertui.core.data import DEMO_SPEC, prepare

    return -(-len(prepare(DEMO_SPEC).train) // batch_size)


def shown_state(home: Path, run_id: str) -> str | None:
    proc = run_bertui("runs", "--json", home=home, timeout=60)
    if proc.returncode != 0:
        return None
    return {row["id"]: row["status"] for row in json.loads(proc.stdout)}.get(run_id)


def metrics_complete(path: Path) -> tuple[bool, str]:
    metrics = read_json(path / METRICS_FILE, {}) or {}
    missing = [k for k in ("pretrained", "probe", "finetuned", "train") if not metrics.get(k)]
    if missing:
        return False, f"metrics.json lacks {', '.join(missing)}"
    model = path / MODEL_DIR
    if not (model / "config.json").exists() or not list(model.glob("*.safetensors")):
        return False, "no saved model"
    return True, ""


def model_loads(path: Path) -> tuple[bool, str]:
    try:
        from transformers import pipeline

        from bertui.core.models import quiet_transformers

        quiet_transformers()

        clf = pipeline("text-classification", model=str(path / MODEL_DIR), device="cpu")
        out = clf(["a lovely evening out", "a dreadful evening out"])
        return len(out) == 2 and all("label" in o for o in out), ""
    except Exception as exc:  # noqa: BLE001 - a figure, not a crash
        return False, f"{type(exc).__name__}: {exc}"


# --- 1. bad inputs ---------------------------------------------------------------------------


def bench_bad_inputs(work: Path, model: Path, finished: Path) -> dict[str, Any]:
    bad = make_bad_files(work / "bad-input", model)
    home = work / "bad-home"
    shutil.copytree(
        finished, home / "runs" / finished.name, ignore=shutil.ignore_patterns(CHECKPOINTS_DIR)
    )
    where = {
        "model": str(model),
        "bad": str(bad),
        "run": finished.name,
        "tmp": str(work / "scratch"),
    }
    (work / "scratch").mkdir(exist_ok=True)
    verdicts = [run_case(case, home, where) for case in CASES]
    return {
        "tried": len(verdicts),
        "answered_one_line": sum(1 for v in verdicts if v["exit"] == 2 and v["one_line"]),
        "answered_right": sum(1 for v in verdicts if v["ok"]),
        "tracebacks": sum(1 for v in verdicts if v["traceback"]),
        "home_unchanged": sum(1 for v in verdicts if v["home_unchanged"]),
        "slowest_s": max(v["seconds"] for v in verdicts),
        "wrong": [
            {"id": v["id"], "problems": v["problems"], "exit": v["exit"], "line": v["line"]}
            for v in verdicts
            if not v["ok"]
        ],
        "cases": [
            {"id": v["id"], "exit": v["exit"], "seconds": v["seconds"], "line": v["line"]}
            for v in verdicts
        ],
    }


# --- 2. worker kills -------------------------------------------------------------------------


def one_kill(home: Path, model: Path, rng: random.Random, index: int) -> dict[str, Any]:
    total = demo_steps()
    target = rng.randint(0, total - 1)
    env = {PAUSE_ENV: str(target)} if target else None
    path = start_detached(home, model, "--name", f"kill-{index}", env=env)
    result: dict[str, Any] = {"run": path.name, "target_step": target, "total_steps": total}
    started = running_pid(path)
    if started is None:
        result["error"] = "the worker never started"
        return result
    pid, pid_started = started
    if target == 0:
        time.sleep(rng.uniform(0.0, 2.0))  # somewhere in loading / baselines
    elif paused_pid(path, target) is None:
        result["error"] = f"never paused at step {target} (state {Run.load(path).state})"
        return result
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid, pid_started), 30, 0.05)
    raw = (path / EVENTS_FILE).read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    steps = train_steps(path)
    checkpoint = last_checkpoint(path / CHECKPOINTS_DIR)
    result.update(
        killed_at_step=max(steps) if steps else 0,
        checkpoint_step=int(checkpoint.name.split("-")[1]) if checkpoint else 0,
        torn_tail_bytes=len(raw) - len(complete),
    )
    result["redone_steps"] = result["killed_at_step"] - result["checkpoint_step"]
    # The same in seconds of training: from the checkpoint (or the start of training) to the
    # last step logged before the kill.
    pre = parse(lines_of(complete))
    last_train = [e["time"] for e in pre if e.get("type") == "train"]
    since = [
        e["time"]
        for e in pre
        if (e.get("type") == "checkpoint" and e.get("step") == result["checkpoint_step"])
        or (e.get("type") == "phase" and e.get("name") == "training")
    ]
    result["work_lost_s"] = (
        round(max(0.0, last_train[-1] - since[-1]), 2) if last_train and since else 0.0
    )
    result["shown_lost"] = bool(wait_for(lambda: shown_state(home, path.name) == "lost", 30, 0.5))

    t0 = time.monotonic()
    proc = run_bertui("resume", path.name, "--detach", home=home, timeout=120)
    if proc.returncode != 0:
        result["error"] = f"resume refused: {proc.stderr.strip()}"
        return result
    state = wait_done(path)
    result["resume_seconds"] = round(time.monotonic() - t0, 1)
    result["final_state"] = state
    ok, why = metrics_complete(path)
    loads, why_model = model_loads(path) if ok else (False, "")
    result["resumed_to_completion"] = state == "finished" and ok and loads
    if not result["resumed_to_completion"]:
        result["error"] = why or why_model or f"ended {state}: {Run.load(path).status.get('error')}"

    after = (path / EVENTS_FILE).read_bytes()
    pre_lines, post_lines = lines_of(complete), lines_of(after)
    result["prefix_intact"] = after.startswith(complete)
    result["events_before_kill"] = len(pre_lines)
    result["events_lost"] = sum((Counter(pre_lines) - Counter(post_lines)).values())
    key = lambda e: (e.get("type"), e.get("step"))  # noqa: E731
    pre_steps = {key(e) for e in parse(pre_lines) if e.get("type") in ("progress", "train")}
    post_steps = {key(e) for e in parse(post_lines) if e.get("type") in ("progress", "train")}
    result["step_events_lost"] = len(pre_steps - post_steps)
    post_events = parse(post_lines)
    result["resume_marker"] = any(e.get("type") == "resume" for e in post_events)
    final_total = max(
        (e.get("total_steps") or 0 for e in post_events if e.get("type") == "run_start"),
        default=total,
    )
    logged = {e["step"] for e in post_events if e.get("type") == "train"}
    result["log_gaps"] = len(set(range(1, final_total + 1)) - logged)
    return result


def bench_kills(home: Path, model: Path, kills: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    results = []
    for i in range(kills):
        try:
            results.append(one_kill(home, model, rng, i))
        except Exception as exc:  # noqa: BLE001
            results.append({"error": f"{type(exc).__name__}: {exc}"})
        r = results[-1]
        print(
            f"  kill {i + 1}/{kills}: step {r.get('killed_at_step', '?')}/"
            f"{r.get('total_steps', '?')}"
            f" checkpoint {r.get('checkpoint_step', '?')} lost-shown {r.get('shown_lost')}"
            f" resumed {r.get('resumed_to_completion')} {r.get('error', '')}",
            file=sys.stderr,
            flush=True,
        )
    done = [r for r in results if "events_lost" in r]
    redone = [r["redone_steps"] for r in done]
    return {
        "kills": len(results),
        "shown_lost": sum(1 for r in results if r.get("shown_lost")),
        "resumed_to_completion": sum(1 for r in results if r.get("resumed_to_completion")),
        "events_lost": sum(r["events_lost"] for r in done),
        "step_events_lost": sum(r["step_events_lost"] for r in done),
        "prefix_intact": sum(1 for r in done if r["prefix_intact"]),
        "resume_markers": sum(1 for r in done if r["resume_marker"]),
        "torn_tail_bytes": sum(r["torn_tail_bytes"] for r in done),
        "log_gaps": sum(r["log_gaps"] for r in done),
        "redone_steps_max": max(redone, default=0),
        "redone_steps_mean": round(sum(redone) / len(redone), 2) if redone else 0,
        "work_lost_s_max": max((r["work_lost_s"] for r in done), default=0.0),
        "details": results,
    }


# --- 3. TUI kills ----------------------------------------------------------------------------


def bench_tui_kills(work: Path, home: Path, model: Path, kills: int) -> dict[str, Any]:
    if kills <= 0:
        return {"skipped": "--tui-kills 0"}
    tmux = shutil.which("tmux")
    if not tmux:
        return {"skipped": "tmux is not installed"}
    socket = f"bertui-bench-{os.getpid()}"
    env = {**os.environ, "BERTUI_HOME": str(home), "HF_HUB_OFFLINE": "1", "TERM": "xterm-256color"}
    env.pop("TMUX", None)

    def tmux_cmd(*args: str, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(
            [tmux, "-L", socket, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=check,
        )

    results = []
    try:
        for i in range(kills):
            path = start_detached(home, model, "--name", f"tui-kill-{i}", "--epochs", "3")
            r: dict[str, Any] = {"run": path.name, "how": "SIGKILL" if i % 2 == 0 else "SIGHUP"}
            started = running_pid(path)
            r["worker_pid"] = started[0] if started else None
            app = " ".join(map(_quote, ["exec", *bertui_cmd()]))
            tmux_cmd("new-session", "-d", "-s", "tui", "-x", "120", "-y", "40", app, check=True)
            pane_pid = int(tmux_cmd("display-message", "-p", "-t", "tui", "#{pane_pid}").stdout)

            def drawn() -> bool:
                text = tmux_cmd("capture-pane", "-p", "-t", "tui").stdout
                return len(text.strip()) > 40

            r["tui_drew"] = bool(wait_for(drawn, 60, 0.5))
            r["tui_alive_before_kill"] = pid_alive(pane_pid)
            r["run_active_at_kill"] = Run.load(path).is_active
            if r["how"] == "SIGKILL":
                os.kill(pane_pid, signal.SIGKILL)
                wait_for(lambda p=pane_pid: not pid_alive(p), 10, 0.1)
                tmux_cmd("kill-server")
            else:
                tmux_cmd("kill-server")  # the terminal goes away: SIGHUP to the pane
                wait_for(lambda p=pane_pid: not pid_alive(p), 10, 0.1)
            r["tui_gone"] = not pid_alive(pane_pid)
            r["final_state"] = wait_done(path)
            status = read_json(path / STATUS_FILE, {}) or {}
            r["same_worker"] = status.get("pid") == r["worker_pid"] and not status.get("resumed")
            r["finished"] = r["final_state"] == "finished" and metrics_complete(path)[0]
            results.append(r)
            print(
                f"  TUI kill {i + 1}/{kills} ({r['how']}): drew {r['tui_drew']}, run "
                f"{r['final_state']}",
                file=sys.stderr,
                flush=True,
            )
    finally:
        tmux_cmd("kill-server")
    return {
        "kills": len(results),
        "tui_drew": sum(1 for r in results if r["tui_drew"] and r["tui_alive_before_kill"]),
        "run_active_at_kill": sum(1 for r in results if r["run_active_at_kill"]),
        "runs_finished": sum(1 for r in results if r["finished"] and r["same_worker"]),
        "details": results,
    }


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


# --- report ----------------------------------------------------------------------------------


def table(report: dict[str, Any]) -> str:
    b, k, t = report["bad_inputs"], report["worker_kills"], report["tui_kills"]
    rows = [
        f"bertui reliability — tiny random BERT, demo data, {report['device']}, "
        f"{report['seconds']:.0f} s",
        f"  bad inputs     tried {b['tried']:>3}"
        f"   answered with one line {b['answered_one_line']:>3}"
        f"   answered right {b['answered_right']:>3}   tracebacks {b['tracebacks']}"
        f"   home unchanged {b['home_unchanged']}/{b['tried']}   slowest {b['slowest_s']:.1f} s",
        f"  worker kills   kills {k['kills']:>3}   shown as lost {k['shown_lost']:>3}"
        f"   resumed to completion {k['resumed_to_completion']:>3}   events lost {k['events_lost']}"
        f" (progress/train steps lost {k['step_events_lost']}, log gaps {k['log_gaps']})"
        f"   steps redone max {k['redone_steps_max']} mean {k['redone_steps_mean']}"
        f" (at most {k['work_lost_s_max']:.1f} s of training)",
    ]
    if "skipped" in t:
        rows.append(f"  TUI kills      skipped: {t['skipped']}")
    else:
        rows.append(
            f"  TUI kills      kills {t['kills']:>3}   TUI drew first {t['tui_drew']:>3}"
            f"   runs finished {t['runs_finished']:>3}"
        )
    for w in b["wrong"]:
        rows.append(f"    bad input {w['id']}: {'; '.join(w['problems'])} — {w['line'][:120]}")
    for d in k["details"]:
        if d.get("error"):
            rows.append(f"    kill {d.get('run')}: {d['error']}")
    return "\n".join(rows)


def healthy(report: dict[str, Any]) -> bool:
    b, k, t = report["bad_inputs"], report["worker_kills"], report["tui_kills"]
    ok = b["answered_right"] == b["tried"] and b["tracebacks"] == 0
    ok &= k["shown_lost"] == k["resumed_to_completion"] == k["kills"]
    ok &= k["events_lost"] == 0 and k["step_events_lost"] == 0 and k["log_gaps"] == 0
    if "skipped" not in t:
        ok &= t["runs_finished"] == t["kills"]
    return bool(ok)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=10, help="worker SIGKILLs (default 10)")
    p.add_argument("--tui-kills", type=int, default=2, help="TUI kills (default 2; 0 skips)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random kill steps")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args(argv)

    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bertui-faults-"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        print(f"work folder {work}", file=sys.stderr, flush=True)
        model = make_tiny_model(work / "tiny-bert")
        home = work / "home"
        print("reference run…", file=sys.stderr, flush=True)
        finished = start_detached(home, model, "--name", "reference")
        if wait_done(finished) != "finished":
            raise SystemExit(f"the reference run did not finish: {finished}/worker.log")
        print(f"bad inputs ({len(CASES)})…", file=sys.stderr, flush=True)
        bad = bench_bad_inputs(work, model, finished)
        print(f"worker kills ({args.kills})…", file=sys.stderr, flush=True)
        kills = bench_kills(home, model, args.kills, args.seed)
        print(f"TUI kills ({args.tui_kills})…", file=sys.stderr, flush=True)
        tui = bench_tui_kills(work, home, model, args.tui_kills)
        import torch

        report = {
            "device": "CUDA" if torch.cuda.is_available() else "CPU",
            "seconds": round(time.monotonic() - t0, 1),
            "seed": args.seed,
            "bad_inputs": bad,
            "worker_kills": kills,
            "tui_kills": tui,
        }
        report["healthy"] = healthy(report)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(table(report))
        return 0 if report["healthy"] else 1
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
