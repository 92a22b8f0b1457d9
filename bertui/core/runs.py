"""Run directories: the contract between the worker process and every client.

A run lives in ``<home>/runs/<run-id>/`` (each name is a constant below: use those)::

    config.toml      what to run (written once, by the client that creates the run)
    status.json      state, pid, host, times, heartbeat, error (atomic replace, worker-owned);
                     a Slurm job's run also executor, job_id, slurm_args (``slurm``)
    events.jsonl     append-only event log, one JSON object a line (``bertui.core.events``)
    metrics.json     final numbers (atomic replace)
    predictions.npz  eval label ids and every arm's predictions
    model/           the fine-tuned model + tokenizer (save_pretrained, safetensors)
    arms/<arm>/      what other arms keep
    checkpoints/     Trainer checkpoints, for resume
    worker.log       the worker's stdout/stderr
    worker.lock      empty; its lock is held by the run's one worker (``bertui.core.process``)

This module reads and creates run directories and judges a run's state; the event log's
schema and reader are in ``events``, spawning, locking and claiming in ``process``, and the
client operations (start, resume, cancel, delete) in ``launch``. It is light on purpose (no
torch, no transformers): the TUI imports it at start-up.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from bertui.core.events import read_events

# The run directory's names, in one place (workers, clients, tests and benchmarks use these).
CONFIG_FILE = "config.toml"
STATUS_FILE = "status.json"
EVENTS_FILE = "events.jsonl"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.npz"
MODEL_DIR = "model"
ARMS_DIR = "arms"
CHECKPOINTS_DIR = "checkpoints"
LOG_FILE = "worker.log"
LOCK_FILE = "worker.lock"
HEAD_FILE = "pretrained_head.safetensors"
PROBE_FILE = "probe.safetensors"

STATES = ("queued", "running", "finished", "failed", "cancelled", "lost")
ACTIVE_STATES = ("queued", "running")
RESUMABLE_STATES = ("cancelled", "lost", "failed")
# A worker rewrites status.json at least this often while it runs.
HEARTBEAT_SECONDS = 2.0
# A run whose heartbeat is older than this (and whose pid is gone or stale) is lost.
STALE_AFTER_SECONDS = 30.0
# A queued run whose worker never wrote a heartbeat is lost after this long.
QUEUED_GRACE_SECONDS = 120.0


class RunError(Exception):
    """A problem with a run directory that a user can act on (one line)."""


def bertui_home() -> Path:
    """Where bertui keeps its runs: ``$BERTUI_HOME`` or the platform's user data dir."""
    env = os.environ.get("BERTUI_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("bertui", appauthor=False))


def runs_dir(home: Path | None = None) -> Path:
    return (home or bertui_home()) / "runs"


# --- atomic files -----------------------------------------------------------------------------


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically: write a temp file, fsync, rename, fsync dir.

    Readers see either the old or the new content, never a half-written file; on failure
    (disk full, permissions) the old file is left untouched and the temp file is removed.
    """
    import tempfile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: bad JSON or bytes
        return default


# --- runs -------------------------------------------------------------------------------------


def new_run_id(name: str | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{os.urandom(3).hex()}"


def pid_alive(pid: int | None, started: float | None = None) -> bool:
    """True if ``pid`` is a live (non-zombie) process, and the same one that started at
    ``started`` (a process create time) when that is given, so a reused pid is not mistaken
    for the worker."""
    if not pid:
        return False
    try:
        import psutil

        proc = psutil.Process(int(pid))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if started is not None and abs(proc.create_time() - float(started)) > 2.0:
            return False
        return True
    except Exception:  # NoSuchProcess, AccessDenied on another user's pid, no psutil
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


class _Entry:
    """A file or folder of the run directory as a read-only attribute (``run.status_path``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, run: Run, owner: type | None = None) -> Path:
        return run.path / self.name


@dataclass
class Run:
    """A run directory and what its files say (read once; call ``refresh`` to re-read)."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def name(self) -> str:
        return self.config.get("name") or self.id

    config_path = _Entry(CONFIG_FILE)
    status_path = _Entry(STATUS_FILE)
    events_path = _Entry(EVENTS_FILE)
    metrics_path = _Entry(METRICS_FILE)
    model_dir = _Entry(MODEL_DIR)
    checkpoints_dir = _Entry(CHECKPOINTS_DIR)
    log_path = _Entry(LOG_FILE)
    predictions_path = _Entry(PREDICTIONS_FILE)
    arms_dir = _Entry(ARMS_DIR)

    @classmethod
    def load(cls, path: Path) -> Run:
        run = cls(Path(path))
        run.refresh()
        return run

    def refresh(self) -> Run:
        try:
            self.config = tomllib.loads(self.config_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, tomllib.TOMLDecodeError):
            self.config = {}
        self.status = read_json(self.status_path, {}) or {}
        return self

    def metrics(self) -> dict[str, Any]:
        return read_json(self.metrics_path, {}) or {}

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.events_path)

    @property
    def state(self) -> str:
        """The state as a client should show it: a running or queued run whose worker is gone
        (pid dead, or heartbeat stale and pid not verifiably alive) is ``lost``."""
        state = self.status.get("state", "lost" if not self.config else "queued")
        if state not in ACTIVE_STATES:
            return state
        now = time.time()
        beat = self.status.get("heartbeat") or self.status.get("created") or 0
        pid = self.status.get("pid")
        if self.on_this_host and pid:
            if not pid_alive(pid, self.status.get("pid_started")):
                return "lost"
            if state == "running" and now - beat > STALE_AFTER_SECONDS * 4:
                return "lost"  # alive but hung for minutes
            return state
        if state == "queued" and self.status.get("job_id"):
            return state  # a Slurm job waits in its queue (bertui.core.slurm.reconcile asks)
        grace = QUEUED_GRACE_SECONDS if state == "queued" else STALE_AFTER_SECONDS
        return "lost" if now - beat > grace else state

    @property
    def on_this_host(self) -> bool:
        """Whether the worker runs (or ran) on this machine: its pid means something here."""
        return self.status.get("host") in (None, _hostname())

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    def last_checkpoint(self) -> Path | None:
        return last_checkpoint(self.checkpoints_dir)

    def summary(self) -> dict[str, Any]:
        """One row for ``bertui runs`` and the Runs screen."""
        metrics = self.metrics()
        status = self.status
        before = (metrics.get("pretrained") or {}).get("accuracy")
        probe = (metrics.get("probe") or {}).get("accuracy")
        after = (metrics.get("finetuned") or {}).get("accuracy")
        started = status.get("started") or status.get("created")
        ended = status.get("ended")
        duration = None
        if started:
            duration = (ended or (time.time() if self.is_active else started)) - started
        train = metrics.get("train") or {}
        return {
            "id": self.id,
            "name": self.name,
            "status": self.state,
            "model": (self.config.get("model") or {}).get("spec"),
            "dataset": (self.config.get("data") or {}).get("train"),
            "accuracy_before": before,
            "accuracy_probe": probe,
            "accuracy_after": after,
            "duration_s": round(duration, 1) if duration is not None else None,
            "samples_per_s": train.get("train_samples_per_s") or status.get("samples_per_s"),
            "arms": metrics.get("arms"),
            "verdict": metrics.get("verdict"),
            "created": status.get("created"),
            "error": status.get("error"),
            "path": str(self.path),
        }


def last_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest complete ``checkpoint-<step>`` folder: one whose trainer_state.json (the
    Trainer writes it last, and not atomically) is there and parses, so a worker killed while
    saving a checkpoint leaves the previous one as the one to resume from."""
    try:
        entries = list(Path(checkpoints_dir).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return None
    found: list[tuple[int, Path]] = []
    for entry in entries:
        if not entry.name.startswith("checkpoint-") or not entry.is_dir():
            continue
        try:
            step = int(entry.name.split("-", 1)[1])
        except ValueError:
            continue
        found.append((step, entry))
    for _step, entry in sorted(found, reverse=True):
        state = read_json(entry / "trainer_state.json")
        if isinstance(state, dict) and "global_step" in state:
            return entry
    return None


def create_run(config: dict[str, Any], home: Path | None = None) -> Run:
    """Create a new, private (0700) run directory with its config.toml and a queued status.

    Run ids never collide: the directory is made with mkdir, which fails if it exists.
    """
    import tomli_w

    root = runs_dir(home)
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise RunError(f"cannot create the runs folder {root}: {exc.strerror or exc}") from exc
    if not os.access(root, os.W_OK | os.X_OK):
        raise RunError(f"cannot write to the runs folder {root}: permission denied")
    for _ in range(100):
        run_id = new_run_id()
        path = root / run_id
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunError(f"cannot create a run folder in {root}: {exc.strerror or exc}") from exc
        break
    else:  # pragma: no cover - 100 collisions of a 24-bit random suffix in one second
        raise RunError("could not find a free run id")
    os.chmod(path, 0o700)
    config = {
        "name": config.get("name") or run_id,
        **{k: v for k, v in config.items() if k != "name"},
    }
    try:
        atomic_write_text(path / CONFIG_FILE, tomli_w.dumps(_toml_clean(config)))
        atomic_write_json(
            path / STATUS_FILE,
            {"state": "queued", "created": time.time(), "host": _hostname()},
        )
    except OSError as exc:
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        raise RunError(f"cannot write the run folder {path}: {exc.strerror or exc}") from exc
    return Run.load(path)


def _toml_clean(obj: Any) -> Any:
    """TOML has no null: drop None values (readers treat missing as default)."""
    if isinstance(obj, dict):
        return {str(k): _toml_clean(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_toml_clean(v) for v in obj if v is not None]
    return obj


def list_runs(home: Path | None = None) -> list[Run]:
    """Every run under the home folder, newest first. A run folder this user cannot read
    (another user's: they are 0700) or one that vanishes meanwhile is left out; a runs folder
    that cannot be listed (under a file, no permission) is a ``RunError``."""
    root = runs_dir(home)
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RunError(f"cannot read the runs folder {root}: {exc.strerror or exc}") from None
    runs = []
    for path in entries:
        try:
            if path.is_dir() and (path / CONFIG_FILE).exists():
                runs.append(Run.load(path))
        except OSError:  # Path.exists raises PermissionError on Python < 3.12
            continue
    return sorted(runs, key=lambda r: r.id, reverse=True)


def find_run(ref: str, home: Path | None = None) -> Run:
    """A run by id, unique id prefix, name, or path to its directory."""
    candidate = Path(ref).expanduser()
    try:
        if candidate.is_dir() and (candidate / CONFIG_FILE).exists():
            return Run.load(candidate)
    except OSError as exc:
        raise RunError(f"cannot read {candidate}: {exc.strerror or exc}") from None
    runs = list_runs(home)
    exact = [r for r in runs if r.id == ref or r.name == ref]
    if len(exact) == 1:
        return exact[0]
    matches = exact or [r for r in runs if r.id.startswith(ref)]
    if not matches:
        raise RunError(f"no run '{ref}' under {runs_dir(home)}")
    if len(matches) > 1:
        ids = ", ".join(r.id for r in matches[:4])
        raise RunError(f"'{ref}' matches {len(matches)} runs ({ids}); give more of the id")
    return matches[0]


def _hostname() -> str:
    import socket  # not at import: the TUI imports this module at start-up

    return socket.gethostname()
