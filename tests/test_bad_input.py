"""Bad input through the headless CLI: one clear line, exit 2, no traceback, nothing lost.

Every case runs the real ``bertui`` command in a subprocess against a home that already holds
a finished run (a copy of the session's ``finished_run``) and checks that

* the exit code is 2 (bad input),
* stderr is exactly one non-empty line that names the problem,
* no "Traceback" appears on stdout or stderr,
* every file under the home is byte-for-byte what it was, and no run folder was added.

Very long texts are not bad input: they are truncated, counted in metrics.json, and the run
finishes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import run_bertui

# --- the bad files ---------------------------------------------------------------------------


def _rows(n: int = 40) -> list[tuple[str, object]]:
    topics = ("the film", "this phone", "our hotel", "the concert", "that book")
    return [
        (f"{topics[i % 5]} number {i} was {'great' if i % 2 else 'awful'}", i % 2) for i in range(n)
    ]


def _csv(path: Path, rows: list[tuple[object, object]], header: str = "text,label") -> Path:
    path.write_text(header + "\n" + "".join(f"{a},{b}\n" for a, b in rows), encoding="utf-8")
    return path


def make_bad_files(d: Path, tiny_model: Path) -> Path:
    """Write the bad (and a few good) datasets and models into ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    rows = _rows()
    _csv(d / "good.csv", rows)
    (d / "empty.csv").write_bytes(b"")
    (d / "blank.csv").write_text("\n\n   \n", encoding="utf-8")
    (d / "binary.csv").write_bytes(bytes(range(256)) * 40)
    (d / "really_csv.json").write_text("text,label\nhello there,1\ngood bye,0\n", encoding="utf-8")
    (d / "really_text.parquet").write_text(
        "text,label\nhello there,1\ngood bye,0\n", encoding="utf-8"
    )
    (d / "ragged.csv").write_text(
        "text,label\nhello world,1\ngood bye,0,surplus\nok,1\n", encoding="utf-8"
    )
    (d / "latin1.csv").write_bytes("text,label\ncafé crème brûlée,1\nplain,0\n".encode("latin-1"))
    (d / "object.json").write_text('{"name": "reviews", "version": 2}', encoding="utf-8")
    (d / "number.json").write_text("42\n", encoding="utf-8")
    (d / "strings.json").write_text('["a text", "another text"]', encoding="utf-8")
    (d / "broken.jsonl").write_text(
        '{"text": "fine", "label": 1}\n{"text": "broken", "lab\n', encoding="utf-8"
    )
    _csv(d / "numeric.csv", [(i * 3, i % 2) for i in range(40)], header="width,label")
    _csv(d / "floats.csv", [(t, 0.25 + lab) for t, lab in rows])
    _csv(d / "one_class.csv", [(t, "positive") for t, _ in rows])
    _csv(d / "all_classes.csv", [(t, f"class{i}") for i, (t, _) in enumerate(rows)])
    _csv(
        d / "missing_labels.csv",
        [(t, "" if i % 7 == 3 else lab) for i, (t, lab) in enumerate(rows)],
    )
    _csv(d / "empty_texts.csv", [("", lab) for _, lab in rows])
    _csv(d / "empty_texts_named.csv", [("  ", lab) for _, lab in rows], header="sentence,label")
    (d / "a_folder").mkdir()
    (d / "a_folder" / "train.csv").write_text("text,label\na,1\n", encoding="utf-8")

    # A corrupt parquet: a real one, truncated.
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts, labels = zip(*rows, strict=True)
    pq.write_table(pa.table({"text": list(texts), "label": list(labels)}), d / "real.parquet")
    raw = (d / "real.parquet").read_bytes()
    (d / "corrupt.parquet").write_bytes(raw[: len(raw) // 2])

    # Models: not a model, a file, pickled-only weights, remote code.
    (d / "not_a_model").mkdir()
    (d / "not_a_model" / "README.md").write_text("just notes\n", encoding="utf-8")
    pickled = d / "pickled_model"
    shutil.copytree(tiny_model, pickled)
    import torch
    from safetensors.torch import load_file

    state = load_file(str(pickled / "model.safetensors"))
    (pickled / "model.safetensors").unlink()
    torch.save(state, pickled / "pytorch_model.bin")
    remote = d / "remote_code_model"
    shutil.copytree(tiny_model, remote)
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
    (remote / "config.json").write_text(json.dumps(config))
    return d


@pytest.fixture(scope="module")
def bad(tmp_path_factory, tiny_model) -> Path:
    """The bad files, built once for this module."""
    return make_bad_files(tmp_path_factory.mktemp("bad-input"), tiny_model)


# --- the home and what must not change -------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its content hash (folders as 'dir')."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def home(bertui_home: Path, finished_run: Path) -> Path:
    """The test's BERTUI_HOME with one finished run already in it."""
    target = bertui_home / "runs" / finished_run.name
    shutil.copytree(finished_run, target, ignore=shutil.ignore_patterns("checkpoints"))
    return bertui_home


def _stop_strays(home: Path, before: dict[str, str]) -> list[str]:
    """Run folders that a (wrongly accepted) command created; their workers are stopped."""
    runs = home / "runs"
    new = (
        [p for p in runs.iterdir() if p.is_dir() and f"runs/{p.name}" not in before]
        if runs.exists()
        else []
    )
    for path in new:
        try:
            pid = json.loads((path / "status.json").read_text()).get("pid")
            if pid:
                os.kill(int(pid), signal.SIGTERM)
        except Exception:
            pass
    return [p.name for p in new]


# --- the catalogue ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad input: the bertui arguments and what its one line must say (any of ``says``).
    Placeholders: {model} the tiny model, {bad} the folder of bad files, {run} the id of a
    finished run in the home, {tmp} a scratch folder."""

    id: str
    args: tuple[str, ...]
    says: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    timeout: float = 120

    def argv(self, **where: str) -> list[str]:
        return [a.format(**where) for a in self.args]

    def environ(self, **where: str) -> dict[str, str]:
        return {k: v.format(**where) for k, v in self.env}


def _train(*args: str) -> tuple[str, ...]:
    return ("train", "--detach", *args)


def _data(name: str, *args: str) -> tuple[str, ...]:
    return _train("--model", "{model}", "--dataset", "{bad}/" + name, *args)


def _opt(*args: str) -> tuple[str, ...]:
    return _train("--model", "{model}", *args)


CASES: list[Case] = [
    # models
    Case("model-path-missing", _train("--model", "{tmp}/no/such-model"), ("no model folder",)),
    Case("model-path-is-a-file", _train("--model", "{bad}/good.csv"), ("not a model folder",)),
    # HF_HUB_OFFLINE unset and an empty HF cache: bertui's own reachability probe must answer,
    # not the hub client after ~27 s of retries. Online, the id does not exist on the hub.
    Case(
        "hub-model-offline-not-cached",
        _train("--model", "bertui-tests/no-such-model-4242"),
        ("not in the local Hugging Face cache", "no model 'bertui-tests"),
        env=(("HF_HUB_OFFLINE", ""), ("HF_HOME", "{tmp}/hf"), ("HF_HUB_CACHE", "{tmp}/hf/hub")),
        timeout=19,
    ),
    Case(
        "folder-not-a-model",
        _train("--model", "{bad}/not_a_model"),
        ("not a model folder (no config.json)",),
    ),
    Case("pickled-weights", _train("--model", "{bad}/pickled_model"), ("only pickled weights",)),
    Case(
        "remote-code",
        _train("--model", "{bad}/remote_code_model"),
        ("needs code from its repository",),
    ),
    # datasets
    Case("dataset-missing", _data("no_such_file.csv"), ("no such file",)),
    Case("dataset-is-a-directory", _data("a_folder"), ("is a directory",)),
    Case("dataset-empty-file", _data("empty.csv"), ("is empty",)),
    Case("dataset-blank-file", _data("blank.csv"), ("is empty",)),
    Case("csv-is-binary", _data("binary.csv"), ("binary",)),
    Case("json-is-csv", _data("really_csv.json"), ("not valid JSON",)),
    Case("parquet-is-text", _data("really_text.parquet"), ("not a readable parquet file",)),
    Case("corrupt-parquet", _data("corrupt.parquet"), ("not a readable parquet file",)),
    Case("ragged-csv", _data("ragged.csv"), ("ragged",)),
    Case("not-utf8", _data("latin1.csv"), ("not UTF-8",)),
    Case("json-object", _data("object.json"), ("not a list of records",)),
    Case("json-number", _data("number.json"), ("not records",)),
    Case("json-list-of-strings", _data("strings.json"), ("not an object",)),
    Case("jsonl-broken-line", _data("broken.jsonl"), ("line 2 is not valid JSON",)),
    Case("no-text-column", _data("numeric.csv"), ("no column holds text",)),
    Case(
        "named-text-column-missing",
        _data("good.csv", "--text-column", "review_body"),
        ("no text column 'review_body'",),
    ),
    Case(
        "named-label-column-missing",
        _data("good.csv", "--label-column", "stars"),
        ("no label column 'stars'",),
    ),
    Case("float-labels", _data("floats.csv"), ("floats",)),
    Case("one-class", _data("one_class.csv"), ("one class only",)),
    Case("every-row-its-own-class", _data("all_classes.csv"), ("too many classes",)),
    Case("labels-missing", _data("missing_labels.csv"), ("label missing on",)),
    Case("all-texts-empty", _data("empty_texts.csv", "--text-column", "text"), ("are empty",)),
    Case("all-texts-blank-inferred", _data("empty_texts_named.csv"), ("are empty",)),
    Case("eval-dataset-bad", _opt("--eval-dataset", "{bad}/floats.csv"), ("floats",)),
    # splits
    Case("eval-split-on-local-file", _data("good.csv", "--eval-split", "nope"), ("--eval-split",)),
    Case("split-on-local-file", _data("good.csv", "--split", "validation"), ("--split",)),
    Case("eval-split-missing-demo", _opt("--eval-split", "nope"), ("no split 'nope'",)),
    Case("eval-at-split-missing-demo", _opt("--eval-dataset", "@nope"), ("no split 'nope'",)),
    Case(
        "hub-dataset-offline-eval-split",
        _opt("--dataset", "bertui-tests/no-such-dataset", "--eval-split", "nope"),
        ("not in the local Hugging Face cache",),
    ),
    Case(
        "hub-eval-dataset-offline",
        _opt("--eval-dataset", "bertui-tests/no-such-dataset"),
        ("not in the local Hugging Face cache",),
    ),
    # options
    Case("max-train-samples-0", _opt("--max-train-samples", "0"), ("--max-train-samples",)),
    Case("max-train-samples-negative", _opt("--max-train-samples", "-5"), ("--max-train-samples",)),
    Case("max-eval-samples-0", _opt("--max-eval-samples", "0"), ("--max-eval-samples",)),
    Case("epochs-0", _opt("--epochs", "0"), ("--epochs",)),
    Case("epochs-negative", _opt("--epochs", "-2"), ("--epochs",)),
    Case("epochs-not-a-number", _opt("--epochs", "three"), ("'three' is not a number",)),
    Case("epochs-nan", _opt("--epochs", "nan"), ("--epochs",)),
    Case("lr-negative", _opt("--lr", "-1"), ("--lr",)),
    Case("lr-zero", _opt("--lr", "0"), ("--lr",)),
    Case("lr-huge", _opt("--lr", "50"), ("--lr",)),
    Case("batch-size-0", _opt("--batch-size", "0"), ("--batch-size",)),
    Case("batch-size-fraction", _opt("--batch-size", "16.5"), ("not a whole number",)),
    Case("max-length-huge", _opt("--max-length", "100000"), ("--max-length",)),
    Case("max-length-0", _opt("--max-length", "0"), ("--max-length",)),
    # The tiny model has 256 positions: 512 is in bertui's range, not in the model's.
    Case(
        "max-length-over-model",
        _opt("--max-length", "512"),
        ("longer than the model allows (256)",),
    ),
    Case("precision-unknown", _opt("--precision", "fp8"), ("--precision",)),
    Case("holdout-out-of-range", _opt("--holdout", "1.5"), ("--holdout",)),
    Case("unknown-flag", _opt("--epochz", "3"), ("unrecognized arguments",)),
    # run ids
    *[
        Case(
            f"{cmd}-unknown-run",
            (cmd, "20990101-000000-nope00", *(("some text",) if cmd == "predict" else ())),
            ("no run '20990101-000000-nope00'",),
        )
        for cmd in ("show", "predict", "cancel", "resume", "delete")
    ],
    Case("resume-finished-run", ("resume", "{run}"), ("already finished",)),
    Case("cancel-finished-run", ("cancel", "{run}"), ("not running",)),
]


def run_case(case: Case, home: Path, where: dict[str, str]) -> dict:
    """Run one case through the CLI; return the verdict (``ok``, and ``problems`` if not)."""
    before = snapshot(home)
    argv = case.argv(**where)
    t0 = time.monotonic()
    try:
        proc = run_bertui(*argv, home=home, env=case.environ(**where), timeout=case.timeout)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code = None
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
    seconds = time.monotonic() - t0
    strays = _stop_strays(home, before)
    line = err.strip()
    verdict = {
        "id": case.id,
        "argv": argv,
        "exit": code,
        "seconds": round(seconds, 2),
        "line": line,
        "one_line": bool(line) and "\n" not in line,
        "traceback": "Traceback" in out or "Traceback" in err,
        "says": any(w.lower() in line.lower() for w in case.says),
        "stdout_clean": out.strip() == "",
        "home_unchanged": snapshot(home) == before,
        "run_started": strays,
    }
    problems = []
    if code is None:
        problems.append(f"no answer within {case.timeout:.0f} s")
    elif code != 2:
        problems.append(f"exit {code}")
    for key, text in (
        ("one_line", "stderr is not one line"),
        ("says", f"says none of {case.says}"),
        ("stdout_clean", "stdout is not empty"),
        ("home_unchanged", "the home changed"),
    ):
        if not verdict[key]:
            problems.append(text)
    if verdict["traceback"]:
        problems.append("traceback")
    if strays:
        problems.append(f"a run was started: {strays}")
    verdict["problems"] = problems
    verdict["ok"] = not problems
    return verdict


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=pytest.mark.timeout(20)) if c.timeout < 20 else c for c in CASES],
    ids=[c.id for c in CASES],
)
def test_bad_input(case, home, bad, tiny_model, finished_run, tmp_path):
    where = {
        "model": str(tiny_model),
        "bad": str(bad),
        "run": finished_run.name,
        "tmp": str(tmp_path),
    }
    v = run_case(case, home, where)
    assert v["ok"], (
        f"bertui {' '.join(v['argv'])}: {'; '.join(v['problems'])}\n"
        f"exit {v['exit']}, stderr: {v['line']!r}"
    )


def test_the_catalogue_covers_the_issue():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)


def test_pickled_weights_pass_validation_with_allow_pickle(bad):
    from bertui.core.launch import RunOptions, build_config

    config = build_config(
        RunOptions(model=str(bad / "pickled_model"), dataset="demo", allow_pickle=True)
    )
    assert config["model"]["allow_pickle"] is True
    assert config["data"]["train_rows"] > 0


def test_remote_code_passes_validation_with_trust_remote_code(bad):
    from bertui.core.models import resolve_model

    source = resolve_model(str(bad / "remote_code_model"), trust_remote_code=True)
    assert source.path is not None


# --- not an error: long texts are truncated and counted --------------------------------------


def test_long_texts_are_truncated_and_counted(tmp_path, tiny_model, bertui_home):
    rows = _rows(60)
    long_text = " ".join(["remarkably"] * 300)  # far more than 32 tokens
    rows = [(long_text if i % 6 == 0 else t, lab) for i, (t, lab) in enumerate(rows)]
    data = _csv(tmp_path / "long.csv", rows)
    n_long = sum(1 for t, _ in rows if t == long_text)
    proc = run_bertui(
        "train",
        "--model",
        str(tiny_model),
        "--dataset",
        str(data),
        "--epochs",
        "1",
        "--max-length",
        "32",
        "--no-probe",
        "--quiet",
        "--json",
        home=bertui_home,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    metrics = json.loads(proc.stdout)
    truncated = metrics["truncated"]
    assert truncated["train"] + truncated["eval"] == n_long
    assert truncated["train"] > 0 and truncated["eval"] > 0
    assert metrics["finetuned"] is not None
