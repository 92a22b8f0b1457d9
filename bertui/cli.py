"""Entry points: ``bertui`` (the terminal app) and the headless ``bertui train|runs|predict|...``.

Exit codes: 0 finished / ok, 1 failed, 2 bad input (one line on stderr, no traceback),
130 cancelled. Heavy libraries (torch, transformers) are imported only by the commands that
need them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bertui.core.events import RunHistory
    from bertui.core.schema import Field

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130
STATE_EXIT = {
    "finished": EXIT_OK,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_CANCELLED,
    "lost": EXIT_FAILED,
}


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None


def flag_type(field: Field) -> Callable[[str], Any]:
    """A run option's flag parser: the schema field's parsing and bounds, so that the flag
    itself refuses a value out of range (``--batch-size -3``), in argparse's one line."""
    from bertui.core.schema import FieldError

    def parse(text: str) -> Any:
        try:
            value = field.parse(text)
            field.check(value)
        except FieldError as exc:
            raise argparse.ArgumentTypeError(exc.reason) from None
        return value

    parse.__name__ = field.name
    return parse


def add_run_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """``bertui train``'s flags: one per run-schema field (a bool's flag turns its default
    around; a list's drop flags take a name out of it: ``--no-probe``), but those ``skip``
    names."""
    from bertui.core.schema import FIELDS, drop_dest

    for field in (f for f in FIELDS if f.name not in skip):
        if field.kind is bool:
            action = "store_false" if field.default else "store_true"
            parser.add_argument(field.flag, dest=field.name, action=action, help=field.spec.help)
        else:
            parser.add_argument(
                field.flag,
                dest=field.name,
                type=flag_type(field),
                default=field.default,
                help=field.spec.help,
            )
        for flag, _name, text in field.spec.drop_flags:
            parser.add_argument(flag, dest=drop_dest(flag), action="store_true", help=text)


def build_parser() -> Parser:
    p = Parser(
        prog="bertui",
        description="Fine-tune BERT classifiers and compare them with the "
        "pre-trained model. With no command, opens the terminal app.",
    )
    sub = p.add_subparsers(dest="command", parser_class=Parser)

    t = sub.add_parser("train", help="start a fine-tuning run (and follow it)")
    add_run_flags(t)
    add_executor_flags(t)
    t.add_argument("--detach", action="store_true", help="print the run id and return at once")
    t.add_argument("--json", action="store_true", help="print metrics.json at the end")
    t.add_argument("--quiet", action="store_true", help="no progress display")

    r = sub.add_parser("runs", help="list runs")
    r.add_argument("--json", action="store_true")

    pr = sub.add_parser("predict", help="classify texts with a run's three models")
    pr.add_argument("run")
    pr.add_argument("texts", nargs="+", metavar="TEXT")
    pr.add_argument("--json", action="store_true")

    for name, text in (
        ("cancel", "stop a run (or a study) at its next step (checkpoint saved)"),
        ("resume", "continue a cancelled or lost run (or study) from its last checkpoint"),
        ("show", "open the terminal app on a run (or a study)"),
        ("delete", "delete a run directory (or a study and its runs)"),
    ):
        c = sub.add_parser(name, help=text)
        c.add_argument("run")
        if name == "resume":
            c.add_argument("--nproc", type=int, default=None, metavar="N",
                           help="processes for this start (torchrun; default: the run's own)")
            c.add_argument("--detach", action="store_true")
            c.add_argument("--json", action="store_true")
            c.add_argument("--quiet", action="store_true")
        if name == "cancel":
            c.add_argument(
                "--wait",
                type=number,
                default=30.0,
                help="seconds to wait for the worker to stop (default 30)",
            )

    add_study_parsers(sub)

    m = sub.add_parser("models", help="list the models bertui can use here")
    m.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if not argv:
            return open_app(None)  # the terminal app: no parser to build (start-up time)
        args = build_parser().parse_args(glue_slurm_args(argv))
        return dispatch(args)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("bertui: interrupted", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # noqa: BLE001 - the one place where anything becomes one line
        from bertui.core.errors import BadInput
        from bertui.core.runs import RunError

        if isinstance(exc, (BadInput, RunError)):
            print(f"bertui: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if isinstance(exc, OSError):
            where = f" ({exc.filename})" if exc.filename else ""
            print(f"bertui: {exc.strerror or exc}{where}", file=sys.stderr)
            # EACCES, ENOSPC, EROFS, ENOTDIR, EISDIR, ENAMETOOLONG: a path or a disk the user
            # can fix (e.g. BERTUI_HOME under a file), not a bertui failure
            return EXIT_BAD_INPUT if exc.errno in (13, 20, 21, 28, 30, 36) else EXIT_FAILED
        if os.environ.get("BERTUI_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"bertui: {type(exc).__name__}: {first} (BERTUI_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED


def dispatch(args: argparse.Namespace) -> int:
    command = args.command
    if command is None:
        return open_app(None)
    return globals()[f"cmd_{command}"](args)


def open_app(run_ref: str | None) -> int:
    import gc

    # No garbage collection until the first frame is on the terminal (the app turns it back
    # on): start-up allocates a lot and frees little, and a full collection over Textual's
    # objects was ~40 ms of CPU before the first screen.
    gc.disable()
    try:
        from bertui.core.runs import list_runs
        from bertui.tui.app import make_app

        list_runs()  # a runs folder that cannot be read: one line here, not a failing app
        app = make_app(show_run=run_ref)
        app.run()
    finally:
        gc.enable()
    return int(getattr(app, "return_code", 0) or 0)


# --- commands ---------------------------------------------------------------------------------


def add_executor_flags(parser: argparse.ArgumentParser) -> None:
    """``--executor`` and ``--slurm-args``: where the run's worker (a study's runs) run."""
    parser.add_argument("--executor", choices=("local", "slurm"), default="local",
                        help="where the worker runs: a detached process here (local, the "
                             "default) or a Slurm batch job (slurm: sbatch, on a shared "
                             "filesystem)")
    parser.add_argument("--slurm-args", default=None, metavar="ARGS",
                        help='sbatch options for each job, one string: "--partition gpu '
                             '--gres gpu:1 --time 2:00:00" (with --executor slurm)')


def glue_slurm_args(argv: list[str]) -> list[str]:
    """``--slurm-args --exclusive`` as ``--slurm-args=--exclusive``: argparse takes a lone
    value that starts with a dash for an option of its own."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if i and argv[i - 1] == "--slurm-args" and out and out[-1] == "--slurm-args":
            out[-1] = f"--slurm-args={arg}"
        else:
            out.append(arg)
    return out


def executor_of(args: argparse.Namespace) -> Any:
    """The ``Executor`` the flags name; with slurm, ``sbatch --test-only`` has accepted its
    options first (a refusal is one line, and nothing is queued or written)."""
    from bertui.core.launch import Executor

    if args.slurm_args and args.executor != "slurm":
        raise UsageError("bertui: --slurm-args needs --executor slurm")
    if args.executor == "slurm":
        from bertui.core.slurm import check_submission

        check_submission(args.slurm_args)
    return Executor(args.executor, args.slurm_args)


def cmd_train(args: argparse.Namespace) -> int:
    from bertui.core.hub import go_offline_if_unreachable
    from bertui.core.launch import build_config, start_run
    from bertui.core.schema import options_from_flags, validate_options

    options = options_from_flags(vars(args))
    if args.executor == "slurm" and options.nnodes > 1 and not options.rdzv_endpoint:
        import dataclasses

        from bertui.core.slurm import RDZV_PORT

        # A multi-node Slurm job meets at its own first node (bertui.core.slurm): no address
        # to give here; this one only stands for it in config.toml.
        options = dataclasses.replace(options, rdzv_endpoint=f"slurm-first-node:{RDZV_PORT}")
    validate_options(options)  # cheap checks before anything slow (the arms after --no-probe)
    executor = executor_of(args)
    go_offline_if_unreachable()
    config = build_config(options)
    run = start_run(config, executor=executor)
    if args.detach:
        print(run.id)
        return EXIT_OK
    return follow(run, as_json=args.json, quiet=args.quiet)


def follow(run: Any, *, as_json: bool = False, quiet: bool = False) -> int:
    """Follow a run until it ends: one live progress line on stderr; Ctrl-C cancels the run."""
    from bertui.core.events import EventReader, RunHistory
    from bertui.core.launch import cancel_run
    from bertui.core.slurm import reconcile

    reader, history = EventReader(run.events_path), RunHistory()
    tty = sys.stderr.isatty()
    show = not quiet
    if show:
        job = f", Slurm job {run.status['job_id']}" if run.status.get("job_id") else ""
        print(f"run {run.id}  (folder {run.path}{job})", file=sys.stderr)
    last_line, last_print, last_asked = "", 0.0, time.monotonic()
    try:
        while True:
            for event in reader.read_new():
                history.apply(event)
                note = event_note(event) if show else None
                if note:
                    print(f"\r{_clear(tty)}{note}", file=sys.stderr)
            state = run.refresh().state
            if run.status.get("state") in ("queued", "running") and (
                    state == "lost" or time.monotonic() - last_asked > 5):
                state, last_asked = reconcile(run).state, time.monotonic()  # a Slurm job's end
            if show:
                line = progress_line(history)
                now = time.time()
                if tty and line != last_line:
                    print(f"\r{_clear(tty)}{line}", end="", file=sys.stderr, flush=True)
                elif not tty and (line != last_line and now - last_print > 10):
                    print(line, file=sys.stderr, flush=True)
                    last_print = now
                last_line = line
            if state not in ("queued", "running"):
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        print(f"\r{_clear(tty)}cancelling {run.id} (checkpoint is saved)…", file=sys.stderr)
        try:
            cancel_run(run, wait=60)
        except Exception:
            pass
        state = run.refresh().state
    if show and tty:
        print(file=sys.stderr)
    return finish_report(run, state, as_json=as_json, quiet=quiet)


def _clear(tty: bool) -> str:
    return "\x1b[2K" if tty else ""


def event_note(event: dict[str, Any]) -> str | None:
    """The line an event gets of its own above the progress line: a baseline's accuracy, a
    warning."""
    kind = event.get("type")
    if kind == "baseline":
        return f"{event['name']}: accuracy {event['accuracy']:.4f}"
    if kind == "log" and event.get("level") == "warning":
        return f"warning: {event.get('message')}"
    return None


def progress_line(history: RunHistory) -> str:
    """The live line: the phase, or during training the step, epoch, speed, ETA and the newest
    eval accuracy (from a ``RunHistory``)."""
    phase, progress, last_eval = history.phase or "starting", history.progress, history.last_eval
    if phase != "training" or not progress:
        return f"{phase}…"
    step, total = progress.get("step", 0), progress.get("total_steps") or 0
    pct = 100 * step / total if total else 0
    eta = progress.get("eta_s")
    parts = [
        f"training {pct:5.1f}% step {step}/{total}",
        f"epoch {progress.get('epoch') or 0:.2f}",
        f"{progress.get('samples_per_s', 0):.1f} samples/s",
    ]
    if eta is not None:
        parts.append(f"ETA {format_seconds(eta)}")
    if last_eval and last_eval.get("accuracy") is not None:
        parts.append(f"eval acc {last_eval['accuracy']:.4f}")
    return "  ".join(parts)


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def finish_report(run: Any, state: str, *, as_json: bool, quiet: bool) -> int:
    metrics = run.metrics()
    if state == "finished":
        if as_json:
            print(json.dumps(metrics, indent=2))
        elif not quiet:
            print(summary_text(metrics), file=sys.stderr)
        return EXIT_OK
    error = run.status.get("error")
    if state == "failed":
        print(
            f"bertui: run {run.id} failed: {error or 'see ' + str(run.log_path)}", file=sys.stderr
        )
        print(f"bertui: full log: {run.log_path}", file=sys.stderr) if not error else None
    elif state == "cancelled":
        print(
            f"bertui: run {run.id} cancelled; 'bertui resume {run.id}' continues it",
            file=sys.stderr,
        )
    elif state == "lost":
        print(
            f"bertui: run {run.id} lost ({error or 'its worker died'}); 'bertui resume {run.id}' "
            "continues it",
            file=sys.stderr,
        )
    if as_json and metrics:
        print(json.dumps(metrics, indent=2))
    return STATE_EXIT.get(state, EXIT_FAILED)


def summary_text(metrics: dict[str, Any]) -> str:
    """The end of a followed run: each arm's accuracy with its 95 % interval, macro-F1 and
    cost, the arms that failed, the training figures, then the verdict."""
    from bertui.core.verdict import arm_reports, arm_title, failed_arms

    rows = []
    for name, m in arm_reports(metrics).items():
        low, high = m.get("accuracy_ci") or (None, None)
        interval = f" (95 % CI {low:.4f}–{high:.4f})" if low is not None else ""
        note = f"({m['note']})" if name == "pretrained" and m.get("note") else ""
        parts = [f"{arm_title(metrics, name):<13} accuracy {m['accuracy']:.4f}{interval}",
                 f"macro-F1 {m['macro_f1']:.4f}", cost_text(m.get("cost") or {}), note]
        rows.append("  " + "  ".join(p for p in parts if p))
    for name, error in failed_arms(metrics).items():
        rows.append(f"  {arm_title(metrics, name):<13} failed: {error}")
    train = metrics.get("train") or {}
    if train:
        rows.append(
            f"  training: {train.get('train_samples_per_s')} samples/s, "
            f"{train.get('train_seconds')} s on {train.get('device')}"
        )
    if metrics.get("verdict"):
        rows.append(f"verdict: {metrics['verdict']}")
    return "\n".join(rows)


def cost_text(cost: dict[str, Any]) -> str:
    """An arm's cost in a few words: "28.1 s, 0.42 Wh" (or "energy not measured")."""
    if cost.get("seconds") is None:
        return ""
    text = f"{cost['seconds']:.1f} s"
    if cost.get("energy_wh") is not None:
        return f"{text}, {cost['energy_wh']:.3g} Wh"
    return text


def cmd_runs(args: argparse.Namespace) -> int:
    from bertui.core.runs import list_runs
    from bertui.core.slurm import reconcile_all

    runs = list_runs()
    reconcile_all(runs)  # a Slurm job that ended before its worker could say so
    rows = [run.summary() for run in runs]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print("no runs yet: 'bertui train' or 'bertui' starts one", file=sys.stderr)
        return EXIT_OK
    print(
        f"{'ID':<23} {'NAME':<20} {'STATUS':<9} {'MODEL':<18} {'DATASET':<22} "
        f"{'ACC BEFORE→AFTER':<17} {'TIME':>8} {'SAMPLES/S':>9}"
    )
    for r in rows:
        acc = f"{_pct(r['accuracy_before'])} → {_pct(r['accuracy_after'])}"
        print(
            f"{r['id']:<23} {_cut(r['name'], 20):<20} {r['status']:<9} {_cut(r['model'], 18):<18} "
            f"{_cut(Path(str(r['dataset'])).name, 22):<22} {acc:<17} "
            f"{format_seconds(r['duration_s']):>8} {r['samples_per_s'] or '-':>9}"
        )
    return EXIT_OK


def _pct(value: float | None) -> str:
    return "  -  " if value is None else f"{100 * value:.1f}%"


def _cut(text: Any, width: int) -> str:
    text = str(text or "-")
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_predict(args: argparse.Namespace) -> int:
    from bertui.core.predict import RunPredictor
    from bertui.core.runs import find_run

    run = find_run(args.run)
    results = RunPredictor(run).load().predict(args.texts)
    if args.json:
        print(json.dumps([{"text": t, **r} for t, r in zip(args.texts, results)], indent=2))
        return EXIT_OK
    for text, result in zip(args.texts, results):
        print(text)
        labels = {r["label"] for r in result.values()}
        for name, r in result.items():
            probs = "  ".join(f"{k} {v:.3f}" for k, v in r["probs"].items())
            mark = "  *" if len(labels) > 1 else ""
            print(f"  {name:<11} {r['label']:<16} {probs}{mark}")
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    from bertui.core.launch import cancel_run
    from bertui.core.runs import find_run

    study = study_of(args.run)
    if study is not None:
        return cancel_study_cmd(study, args.wait)
    run = find_run(args.run)
    stopped = cancel_run(run, wait=args.wait)
    state = run.refresh().state
    print(f"run {run.id}: {state}" + ("" if stopped else " (still stopping)"), file=sys.stderr)
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    from bertui.core.launch import resume_run
    from bertui.core.runs import find_run

    study = study_of(args.run)
    if study is not None:
        return resume_study_cmd(study, args)
    if args.nproc is not None and args.nproc < 1:
        from bertui.core.errors import BadInput

        raise BadInput(f"--nproc must be ≥ 1 (got {args.nproc})", field="nproc")
    run = resume_run(find_run(args.run), nproc=args.nproc)
    if args.detach:
        print(run.id)
        return EXIT_OK
    return follow(run, as_json=args.json, quiet=args.quiet)


def cmd_show(args: argparse.Namespace) -> int:
    from bertui.core.runs import find_run

    study = study_of(args.run)  # a study opens on its Study screen
    if study is not None:
        return open_app(str(study.path))
    run = find_run(args.run)  # a bad id is a one-line error before any screen opens
    return open_app(str(run.path))  # the path: the run may live outside the bertui home


def cmd_delete(args: argparse.Namespace) -> int:
    from bertui.core.launch import delete_run
    from bertui.core.runs import find_run

    study = study_of(args.run)
    if study is not None:
        return delete_study_cmd(study)
    run = find_run(args.run)
    delete_run(run)
    print(f"deleted run {run.id}", file=sys.stderr)
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from bertui.core.models import list_cached_models, model_info, resolve_model

    rows = [model_info(resolve_model("default"))] + list_cached_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for row in rows:
        size = row.get("size_bytes") or 0
        print(f"{row['spec']:<40} {row.get('model_type') or '':<12} {size / 1e6:8.1f} MB")
    return EXIT_OK


# --- studies ----------------------------------------------------------------------------------

DEFAULT_BUDGETS = "32,128,512,2048,all"


def whole_number(text: str) -> int:
    try:
        return int(text.strip().replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None


def add_study_parsers(sub: Any) -> None:
    """``bertui study`` (every run flag but ``--budget``, plus the grid) and ``bertui studies``."""
    s = sub.add_parser("study", help="a learning curve: runs over label budgets and seeds")
    add_run_flags(s, skip=("budget",))
    s.add_argument("--budgets", default=DEFAULT_BUDGETS,
                   help=f"label budgets, comma-separated: numbers of train rows or 'all' "
                        f"(default {DEFAULT_BUDGETS})")
    s.add_argument("--seeds", type=whole_number, default=3,
                   help="how many seeds, from --seed on (default 3)")
    add_executor_flags(s)
    s.add_argument("--parallel", type=whole_number, default=None, metavar="N",
                   help="runs at once (default: one a free GPU, one on a CPU; with --executor "
                        "slurm, every run is submitted at once)")
    s.add_argument("--detach", action="store_true", help="print the study id and return at once")
    s.add_argument("--json", action="store_true", help="print summary.json at the end")
    s.add_argument("--quiet", action="store_true", help="no progress lines")
    st = sub.add_parser("studies", help="list studies")
    st.add_argument("--json", action="store_true")


def cmd_study(args: argparse.Namespace) -> int:
    from bertui.core.hub import go_offline_if_unreachable
    from bertui.core.schema import options_from_flags, validate_options
    from bertui.core.studies import start_study, study_config
    from bertui.core.study import parse_budgets, seeds_of

    options = options_from_flags(vars(args))
    validate_options(options)
    budgets = parse_budgets(args.budgets)
    seeds = seeds_of(args.seeds, options.seed)
    if args.parallel is not None and args.parallel < 1:
        raise UsageError("bertui study: --parallel must be a whole number ≥ 1")
    executor = executor_of(args)
    go_offline_if_unreachable()
    config = study_config(options, budgets, seeds)
    config["executor"] = {"kind": executor.kind, "slurm_args": executor.slurm_args,
                          "parallel": args.parallel}
    study = start_study(config)
    if args.detach:
        print(study.id)
        return EXIT_OK
    return follow_study(study, as_json=args.json, quiet=args.quiet)


def follow_study(study: Any, *, as_json: bool = False, quiet: bool = False) -> int:
    """Follow a study until it ends: a line as each of its runs starts and ends; Ctrl-C
    cancels the study (the run going now keeps a checkpoint)."""
    from bertui.core.events import EventReader
    from bertui.core.studies import cancel_study

    reader = EventReader(study.events_path)
    if not quiet:
        print(f"study {study.id}  (folder {study.path})", file=sys.stderr)
    try:
        while True:
            active = study.refresh().is_active
            for event in reader.read_new():
                note = None if quiet else study_note(event)
                if note:
                    print(note, file=sys.stderr)
            if not active:
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        print(f"cancelling study {study.id} (the run going now keeps a checkpoint)…",
              file=sys.stderr)
        try:
            cancel_study(study, wait=120)
        except Exception:
            pass
    return study_report(study, study.refresh().state, as_json=as_json, quiet=quiet)


def study_note(event: dict[str, Any]) -> str | None:
    """The line a study event gets: a run started or ended, a warning."""
    kind = event.get("type")
    cell = f"budget {event.get('budget')}, seed {event.get('seed')}"
    if kind == "study_run_start":
        return f"{cell}: run {event.get('run')} {event.get('how')}"
    if kind == "study_run_end":
        error = f": {event['error']}" if event.get("error") else ""
        return f"{cell}: {event.get('state')}{error}"
    if kind == "log" and event.get("level") == "warning":
        return f"warning: {event.get('message')}"
    return None


def study_report(study: Any, state: str, *, as_json: bool, quiet: bool) -> int:
    summary = study.summary_json()
    if as_json and summary:
        print(json.dumps(summary, indent=2))
    elif not quiet and summary:
        print(study_text(summary), file=sys.stderr)
    if state != "finished":
        how = {"cancelled": "cancelled", "lost": "lost (its runner died)"}.get(state, state)
        error = study.status.get("error")
        print(f"bertui: study {study.id} {how}{f': {error}' if error else ''}"
              + ("" if state == "failed" and not error else
                 f"; 'bertui resume {study.id}' continues it"), file=sys.stderr)
    return STATE_EXIT.get(state, EXIT_FAILED)


def study_text(summary: dict[str, Any]) -> str:
    """A study's summary as a table (budget × arm: mean accuracy, seed range), then the
    crossover and the verdict."""
    arms = summary.get("arms", [])
    rows = [f"  {'budget':>8} {'rows':>7}  " + "".join(f"{a:<24}" for a in arms)]
    by = {(p["arm"], p["budget"]): p for p in summary.get("points", [])}
    for budget, n in zip(summary.get("budgets", []), summary.get("rows", [])):
        cells = []
        for arm in arms:
            acc = by.get((arm, budget), {}).get("accuracy")
            cells.append(f"{_pct(acc['mean'])} ({_pct(acc['min'])}–{_pct(acc['max'])})"
                         if acc else "-")
        rows.append(f"  {budget:>8} {n:>7}  " + "".join(f"{c:<24}" for c in cells))
    cross = summary.get("crossover")
    if cross:
        rows.append(f"  fine-tune beats the probe: {cross['text']}")
    if summary.get("verdict"):
        rows.append(f"  {summary['verdict']}")
    return "\n".join(rows)


def cmd_studies(args: argparse.Namespace) -> int:
    from bertui.core.studies import list_studies

    rows = [study.summary() for study in list_studies()]
    if args.json:
        return print_json(rows)
    if not rows:
        print("no studies yet: 'bertui study' starts one", file=sys.stderr)
        return EXIT_OK
    print(f"{'ID':<30} {'NAME':<20} {'STATUS':<9} {'RUNS':>7} {'BUDGETS':<22} {'MODEL':<18} "
          f"CROSSOVER")
    for r in rows:
        done = f"{r['runs_finished']}/{r['runs_total']}"
        print(f"{r['id']:<30} {_cut(r['name'], 20):<20} {r['status']:<9} {done:>7} "
              f"{_cut(','.join(map(str, r['budgets'])), 22):<22} {_cut(r['model'], 18):<18} "
              f"{r['crossover'] or '-'}")
    return EXIT_OK


def print_json(obj: Any) -> int:
    print(json.dumps(obj, indent=2))
    return EXIT_OK


def study_of(ref: str) -> Any:
    """The study a cancel / resume / delete names, or None when it names a run: an id that
    starts with ``study-`` must be a study's."""
    from bertui.core.studies import ID_PREFIX, find_study, match_study

    return find_study(ref) if ref.startswith(ID_PREFIX) else match_study(ref)


def cancel_study_cmd(study: Any, wait: float) -> int:
    from bertui.core.studies import cancel_study

    stopped = cancel_study(study, wait=wait)
    state = study.refresh().state
    print(f"study {study.id}: {state}" + ("" if stopped else " (still stopping)"),
          file=sys.stderr)
    return EXIT_OK


def resume_study_cmd(study: Any, args: argparse.Namespace) -> int:
    from bertui.core.studies import resume_study

    study = resume_study(study)
    if args.detach:
        print(study.id)
        return EXIT_OK
    return follow_study(study, as_json=args.json, quiet=args.quiet)


def delete_study_cmd(study: Any) -> int:
    from bertui.core.studies import delete_study

    n = delete_study(study)
    print(f"deleted study {study.id} and its {n} run{'s' if n != 1 else ''}", file=sys.stderr)
    return EXIT_OK
