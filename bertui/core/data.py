"""Load a labelled text dataset from a spec, infer its columns, map labels, make the splits.

A dataset spec is one of:

* ``demo`` — the small sentiment dataset shipped inside the package (own train/test split);
* a local file: ``.csv``, ``.tsv``, ``.json`` (a list of records), ``.jsonl``, ``.parquet``;
* a Hugging Face hub dataset ``ID[:CONFIG][@SPLIT]`` (``nyu-mll/glue:sst2``,
  ``stanfordnlp/imdb@train``), from the local cache when the hub is out of reach.

Everything here works on plain columns (``dict[str, list]``): files are parsed strictly so
that a bad file gets one clear line (:class:`BadInput`) instead of a half-loaded table.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertui.core.errors import BadInput
from bertui.core.schema import RunOptions

DEMO_SPEC = "demo"
FILE_KINDS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".parquet": "parquet",
}
TEXT_NAMES = (
    "text",
    "sentence",
    "review",
    "content",
    "question",
    "document",
    "body",
    "comment",
    "tweet",
    "utterance",
    "query",
    "sentence1",
    "premise",
    "title",
)
LABEL_NAMES = (
    "label",
    "labels",
    "class",
    "category",
    "target",
    "sentiment",
    "coarse_label",
    "intent",
    "topic",
    "y",
    "gold_label",
    "fine_label",
)
DEFAULT_HOLDOUT: float = RunOptions.holdout  # the schema's default, written there once
_HUB_DATASET = re.compile(
    r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?(:[\w.\-]+)?(@[\w.\-\[\]:%+]+)?$"
)


@dataclass
class Table:
    """Columns of equal length, plus label names when the source declares them."""

    columns: dict[str, list[Any]]
    source: str
    label_names: dict[str, list[str]] = field(default_factory=dict)  # column -> ClassLabel names

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def rows(self, n: int) -> list[dict[str, Any]]:
        return [{k: v[i] for k, v in self.columns.items()} for i in range(min(n, len(self)))]


@dataclass
class Split:
    texts: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class PreparedData:
    """What a run trains and evaluates on, and how it got there."""

    train: Split
    eval: Split
    id2label: dict[int, str]
    text_column: str
    label_column: str
    eval_source: str  # "file <path>", "split <name>", "demo test split", "held out 20%"
    report: dict[str, Any]
    unlabeled: list[str] = field(default_factory=list)  # the tapt arm's extra texts
    pool_index: list[int] | None = None  # each train row's row in the train pool (a budget's)

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in self.id2label.items()}

    def label_counts(self, split: str = "train") -> dict[str, int]:
        counts = Counter((self.train if split == "train" else self.eval).labels)
        return {self.id2label[i]: counts.get(i, 0) for i in sorted(self.id2label)}


# --- reading ----------------------------------------------------------------------------------


def demo_files() -> tuple[Path, Path]:
    here = Path(__file__).resolve().parent.parent / "data"
    return here / "demo_train.csv", here / "demo_test.csv"


def parse_hub_spec(spec: str) -> tuple[str, str | None, str | None]:
    rest, _, split = spec.partition("@")
    repo, _, config = rest.partition(":")
    return repo, config or None, split or None


def is_local_spec(spec: str) -> bool:
    path = Path(spec).expanduser()
    return (
        path.exists()
        or spec.startswith(("/", "./", "../", "~"))
        or path.suffix.lower() in FILE_KINDS
        or not _HUB_DATASET.match(spec)
    )


def read_table(spec: str, split: str | None = None) -> Table:
    """Read a dataset spec into a :class:`Table`. ``split`` applies to hub datasets."""
    spec = (spec or "").strip()
    if not spec:
        raise BadInput("no dataset given", field="dataset")
    if spec == DEMO_SPEC:
        return read_file(demo_files()[0])
    if is_local_spec(spec):
        return read_file(Path(spec).expanduser())
    repo, config, spec_split = parse_hub_spec(spec)
    return read_hub(repo, config, split or spec_split or "train")


def read_file(path: Path, *, min_columns: int = 2) -> Table:
    """A data file as a table (``min_columns``: 1 for texts without labels)."""
    path = Path(path)
    shown = str(path)
    _check_file(path)
    kind = FILE_KINDS.get(path.suffix.lower())
    if kind is None:
        raise BadInput(
            f"{shown}: unsupported file type '{path.suffix or '(none)'}' "
            "(use .csv, .tsv, .json, .jsonl or .parquet)",
            field="dataset",
        )
    _check_size(path)
    try:
        if kind == "parquet":
            table = _read_parquet(path)
        else:
            text = _read_text(path, kind)
            if kind in ("csv", "tsv"):
                table = _parse_delimited(text, "\t" if kind == "tsv" else ",", shown, min_columns)
            elif kind == "json":
                table = _parse_json(text, shown)
            else:
                table = _parse_jsonl(text, shown)
    except PermissionError as exc:
        raise BadInput(f"cannot read {shown}: permission denied", field="dataset") from exc
    table.source = shown
    if len(table) == 0:
        raise BadInput(f"{shown} has no data rows", field="dataset")
    return table


def _check_file(path: Path) -> None:
    """BadInput for a path that is not there or is a folder."""
    if not path.exists():
        raise BadInput(f"no such file: {path}", field="dataset")
    if path.is_dir():
        raise BadInput(f"{path} is a directory, not a data file", field="dataset")


def _check_size(path: Path) -> None:
    """BadInput for a file that cannot be looked at or is empty."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}", field="dataset") from exc
    if size == 0:
        raise BadInput(f"{path} is empty", field="dataset")


def _read_text(path: Path, kind: str) -> str:
    """A file's text: BadInput where it is binary, not UTF-8, or blank."""
    raw = path.read_bytes()
    if b"\x00" in raw[:65536]:
        raise BadInput(f"{path} is binary, not a {kind} text file", field="dataset")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput(
            f"{path} is not UTF-8 text (bad byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start}); re-save it as UTF-8",
            field="dataset",
        ) from exc
    if not text.strip():
        raise BadInput(f"{path} is empty", field="dataset")
    return text


def read_unlabeled(spec: str, text_column: str | None = None) -> list[str]:
    """The texts of an unlabeled corpus (the tapt arm's ``--unlabeled``): a data file's text
    column (``text_column`` where the file has it, else the inferred one), or any other file
    as plain text, one text a line; blank texts left out. BadInput (field ``unlabeled``) for
    a file that is not there, cannot be read, or holds no text."""
    path = Path(spec).expanduser()
    try:
        if path.suffix.lower() in FILE_KINDS:
            table = read_file(path, min_columns=1)
            column = text_column if text_column in table.columns else infer_text_column(table)
            values = table.columns[column]
        else:
            _check_file(path)
            _check_size(path)
            values = _read_text(path, "plain").splitlines()
    except PermissionError:
        raise BadInput(f"cannot read {path}: permission denied", field="unlabeled") from None
    except BadInput as exc:
        raise BadInput(str(exc), field="unlabeled") from None
    texts = [_valid_unicode(v.strip()) for v in values if isinstance(v, str) and v.strip()]
    if not texts:
        raise BadInput(f"{path} has no texts", field="unlabeled")
    return texts


def _parse_delimited(text: str, delimiter: str, shown: str, min_columns: int = 2) -> Table:
    # Not strict: a stray quote inside a field is kept as text, as pandas (and so the
    # reference pipeline and the datasets library) read it; ragged rows are still refused.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)
    try:
        header = next(reader)
        rows = list(reader)
    except csv.Error as exc:
        raise BadInput(
            f"{shown} is not valid {_kind_name(delimiter)}: {exc}", field="dataset"
        ) from exc
    header = [h.strip() for h in header]
    if len(header) < min_columns:
        what = "tab" if delimiter == "\t" else "comma"
        raise BadInput(
            f"{shown} has {len(header)} column; a labelled dataset needs a text and a label "
            f"column ({what}-separated, with a header line)",
            field="dataset",
        )
    if len(set(header)) != len(header) or any(not h for h in header):
        raise BadInput(
            f"{shown}: the header line has empty or repeated column names", field="dataset"
        )
    columns: dict[str, list[Any]] = {h: [] for h in header}
    width = len(header)
    for number, row in enumerate(rows, start=2):
        if not row:  # blank line
            continue
        if len(row) != width:
            raise BadInput(
                f"{shown}: line {number} has {len(row)} fields, the header has {width} "
                "(ragged rows; check quoting and the separator)",
                field="dataset",
            )
        for name, value in zip(header, row):
            columns[name].append(value)
    return Table(columns, shown)


def _kind_name(delimiter: str) -> str:
    return "TSV" if delimiter == "\t" else "CSV"


def _records_to_table(records: list[Any], shown: str, where: str) -> Table:
    if not records:
        raise BadInput(f"{shown} has no records", field="dataset")
    names: dict[str, None] = {}
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise BadInput(
                f"{shown}: {where} {i + 1} is a {type(record).__name__}, not an object "
                'with named fields (expected records like {"text": ..., "label": ...})',
                field="dataset",
            )
        for key in record:
            names.setdefault(str(key), None)
    columns = {name: [record.get(name) for record in records] for name in names}
    return Table(columns, shown)


def _parse_json(text: str, shown: str) -> Table:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = " (one object a line? name it .jsonl)" if "Extra data" in exc.msg else ""
        first = text.lstrip().split("\n", 1)[0]
        if exc.pos <= len(text) - len(text.lstrip()) and ("," in first or "\t" in first):
            hint = " (it looks like CSV/TSV: name it .csv or .tsv)"
        raise BadInput(
            f"{shown} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}{hint}",
            field="dataset",
        ) from exc
    if isinstance(data, dict):
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if len(lists) == 1 and all(isinstance(r, dict) for r in next(iter(lists.values()))):
            return _records_to_table(next(iter(lists.values())), shown, "record")
        if lists and len(lists) == len(data) and len({len(v) for v in lists.values()}) == 1:
            return Table({str(k): list(v) for k, v in data.items()}, shown)
        raise BadInput(
            f"{shown} is a JSON object, not a list of records "
            '(expected [{"text": ..., "label": ...}, ...])',
            field="dataset",
        )
    if not isinstance(data, list):
        raise BadInput(
            f"{shown} holds a single JSON {type(data).__name__}, not records", field="dataset"
        )
    return _records_to_table(data, shown, "item")


def _parse_jsonl(text: str, shown: str) -> Table:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise BadInput(
                f"{shown}: line {number} is not valid JSON ({exc.msg})", field="dataset"
            ) from exc
    return _records_to_table(records, shown, "line")


def _read_parquet(path: Path) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        arrow = pq.read_table(path)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise BadInput(
            f"{path} is not a readable parquet file ({str(exc).splitlines()[0]})", field="dataset"
        ) from exc
    return Table({name: arrow.column(name).to_pylist() for name in arrow.column_names}, str(path))


def read_hub(repo: str, config: str | None, split: str) -> Table:
    """A hub dataset split, from the cache when the hub is out of reach."""
    from bertui.core.hub import go_offline_if_unreachable

    online = go_offline_if_unreachable()
    try:
        import datasets
        from datasets.exceptions import DatasetNotFoundError

        ds = datasets.load_dataset(repo, config, split=split)
    except DatasetNotFoundError as exc:
        if not online:
            raise BadInput(
                f"dataset '{repo}' is not in the local Hugging Face cache and the hub cannot be "
                "reached (offline); use 'demo' or a local file",
                field="dataset",
            ) from exc
        raise BadInput(f"no dataset '{repo}' on the Hugging Face hub", field="dataset") from exc
    except ValueError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "split" in message.lower():
            raise BadInput(
                f"dataset '{repo}' has no split '{split}' ({message})", field="dataset"
            ) from exc
        if "config" in message.lower():
            raise BadInput(f"dataset '{repo}': {message}", field="dataset") from exc
        raise BadInput(f"cannot load dataset '{repo}': {message}", field="dataset") from exc
    except (ConnectionError, OSError) as exc:
        if not online:
            raise BadInput(
                f"dataset '{repo}' is not in the local Hugging Face cache and the hub cannot be "
                "reached (offline)",
                field="dataset",
            ) from exc
        raise BadInput(f"cannot load dataset '{repo}': {exc}", field="dataset") from exc
    names = {}
    for name, feature in ds.features.items():
        if getattr(feature, "names", None):
            names[name] = list(feature.names)
    return Table(ds.to_dict(), f"{repo}{':' + config if config else ''}@{split}", names)


def hub_split_names(repo: str, config: str | None) -> list[str]:
    try:
        from datasets import get_dataset_split_names

        return list(get_dataset_split_names(repo, config))
    except Exception:
        return []


# --- columns ----------------------------------------------------------------------------------


def _is_text(values: list[Any]) -> bool:
    sample = [v for v in values[:500] if v is not None and v != ""]
    if not sample or not all(isinstance(v, str) for v in sample):
        return False
    numeric = sum(1 for v in sample if _as_number(v) is not None)
    return numeric < len(sample) * 0.5


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _mean_len(values: list[Any]) -> float:
    sample = [v for v in values[:500] if isinstance(v, str)]
    return sum(len(v) for v in sample) / max(1, len(sample))


def infer_text_column(table: Table) -> str:
    candidates = [name for name in table.names if _is_text(table.columns[name])]
    if not candidates:
        blank = [
            name
            for name in table.names
            if name.lower() in TEXT_NAMES
            and all(
                v is None or (isinstance(v, str) and not v.strip()) for v in table.columns[name]
            )
        ]
        if blank:
            raise BadInput(
                f"{table.source}: all {len(table)} texts in column '{blank[0]}' are empty",
                field="text_column",
            )
        raise BadInput(
            f"{table.source}: no column holds text (columns: {', '.join(table.names)})",
            field="text_column",
        )
    lowered = {name.lower(): name for name in candidates}
    for wanted in TEXT_NAMES:
        if wanted in lowered:
            return lowered[wanted]
    return max(candidates, key=lambda name: _mean_len(table.columns[name]))


def infer_label_column(table: Table, text_column: str) -> str:
    others = [name for name in table.names if name != text_column]
    lowered = {name.lower(): name for name in others}
    for wanted in LABEL_NAMES:
        if wanted in lowered:
            return lowered[wanted]
    if table.label_names:
        for name in others:
            if name in table.label_names:
                return name
    best = None
    for name in others:
        values = [v for v in table.columns[name] if v is not None and v != ""]
        distinct = len({str(v) for v in values})
        if 2 <= distinct <= max(2, min(100, len(values) // 2)):
            if best is None or distinct < best[0]:
                best = (distinct, name)
    if best is None:
        raise BadInput(
            f"{table.source}: no column looks like labels (columns: {', '.join(table.names)}); "
            "name one with --label-column",
            field="label_column",
        )
    return best[1]


def pick_columns(
    table: Table, text_column: str | None, label_column: str | None
) -> tuple[str, str]:
    for given, what in ((text_column, "text"), (label_column, "label")):
        if given and given not in table.columns:
            raise BadInput(
                f"{table.source} has no {what} column '{given}' "
                f"(columns: {', '.join(table.names)})",
                field=f"{what}_column",
            )
    text = text_column or infer_text_column(table)
    label = label_column or infer_label_column(table, text)
    if text == label:
        raise BadInput("the text and the label column must differ", field="label_column")
    return text, label


# --- labels -----------------------------------------------------------------------------------


def label_values(table: Table, column: str) -> list[Any]:
    """The label column's values as ints or strings; floats and missing values are refused."""
    values = table.columns[column]
    names = table.label_names.get(column)
    missing = [
        i
        for i, v in enumerate(values)
        if v is None
        or (isinstance(v, str) and not v.strip())
        or (isinstance(v, float) and math.isnan(v))
    ]
    if missing:
        raise BadInput(
            f"{table.source}: label missing on {len(missing)} of {len(values)} rows "
            f"(first at row {missing[0] + 1}); fill or drop those rows",
            field="label_column",
        )
    if names:
        return [names[v] if isinstance(v, int) and 0 <= v < len(names) else v for v in values]
    out: list[Any] = []
    kinds = set()
    for value in values:
        if isinstance(value, bool):
            value = str(value).lower()
        if isinstance(value, float):
            if not value.is_integer():
                raise BadInput(
                    f"label column '{column}' holds floats (e.g. {value}); classification needs "
                    "discrete labels (ints or strings)",
                    field="label_column",
                )
            raise BadInput(
                f"label column '{column}' holds floats (e.g. {value}); write the labels as ints "
                "or strings",
                field="label_column",
            )
        if isinstance(value, str):
            stripped = value.strip()
            if re.fullmatch(r"[+-]?\d+", stripped):
                value = int(stripped)
            elif re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][+-]?\d+)", stripped):
                raise BadInput(
                    f"label column '{column}' holds floats (e.g. {stripped}); classification "
                    "needs discrete labels (ints or strings)",
                    field="label_column",
                )
            else:
                value = stripped
        if isinstance(value, (list, dict)):
            raise BadInput(
                f"label column '{column}' holds {type(value).__name__}s; one label per row "
                "is needed (multi-label is not supported)",
                field="label_column",
            )
        kinds.add(type(value))
        out.append(value)
    if kinds == {int, str}:
        out = [str(v) for v in out]
    return out


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int) else (1, str(value))


def build_label_map(*label_lists: list[Any]) -> tuple[dict[int, str], dict[Any, int]]:
    names = sorted({v for labels in label_lists for v in labels}, key=_sort_key)
    return {i: str(v) for i, v in enumerate(names)}, {v: i for i, v in enumerate(names)}


# --- splits -----------------------------------------------------------------------------------


def _texts(table: Table, column: str) -> list[Any]:
    values = table.columns[column]
    sample = [v for v in values if v is not None and v != ""]
    if sample and not any(isinstance(v, str) for v in sample[:200]):
        raise BadInput(
            f"column '{column}' holds {type(sample[0]).__name__} values, not text",
            field="text_column",
        )
    return values


def _clean(texts: list[Any], labels: list[Any]) -> tuple[list[str], list[Any], int]:
    kept_t, kept_l, dropped = [], [], 0
    for text, label in zip(texts, labels):
        if text is None or not isinstance(text, str) or not text.strip():
            dropped += 1
            continue
        kept_t.append(_valid_unicode(text))
        kept_l.append(label)
    return kept_t, kept_l, dropped


def _valid_unicode(text: str) -> str:
    """``text`` with any lone surrogate (JSON allows ``"\\ud83d"``, common in truncated
    tweets; no tokenizer takes it) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def seeded_sample(n: int, cap: int | None, seed: int) -> list[int] | None:
    """Indices of a seeded random sample of ``cap`` of ``n`` rows (the same permutation as
    ``datasets.Dataset.shuffle(seed)``), or None when no cap applies."""
    if cap is None or cap >= n:
        return None
    import numpy as np

    return [int(i) for i in np.random.default_rng(seed).permutation(n)[:cap]]


def stratified_holdout(
    labels: list[int], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """(train indices, eval indices): ``fraction`` of each class held out, seeded. A class with
    a single example stays in train."""
    import numpy as np

    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    train_idx, eval_idx = [], []
    for label in sorted(by_class):
        idx = by_class[label]
        perm = [idx[j] for j in rng.permutation(len(idx))]
        take = 0 if len(idx) < 2 else max(1, min(len(idx) - 1, round(len(idx) * fraction)))
        eval_idx.extend(perm[:take])
        train_idx.extend(perm[take:])
    return sorted(train_idx), sorted(eval_idx)


def check_caps(max_train: int | None, max_eval: int | None) -> None:
    for value, flag in ((max_train, "max-train-samples"), (max_eval, "max-eval-samples")):
        if value is not None and value <= 0:
            raise BadInput(f"--{flag} must be a positive number of rows (got {value})", field=flag)


def few_labels(values: Any, n: int = 5) -> str:
    """Up to ``n`` labels for a one-line message, in their order (sets: sorted)."""
    shown = sorted(map(str, values)) if isinstance(values, set) else [str(v) for v in values]
    return ", ".join(shown[:n]) + (f", … {len(shown) - n} more" if len(shown) > n else "")


def prepare(
    train_spec: str,
    eval_spec: str | None = None,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    split: str | None = None,
    eval_split: str | None = None,
    holdout: float = DEFAULT_HOLDOUT,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 0,
    budget: int | None = None,
    data_seed: int | None = None,
    unlabeled: str | None = None,
) -> PreparedData:
    """Everything a run needs from its data, checked; raises :class:`BadInput` on bad data.

    ``data_seed`` (default: ``seed``) seeds the held-out split and the row caps; ``budget``
    then takes a stratified subset of that many train rows, seeded by ``seed`` (a study's
    label budget, ``bertui.core.study.budget_subset``)."""
    _check_options(train_spec, split, holdout, max_train_samples, max_eval_samples)
    run_seed, seed = seed, seed if data_seed is None else data_seed
    train_table = read_table(train_spec, split)
    text_col, label_col = pick_columns(train_table, text_column, label_column)
    eval_table, eval_source = _eval_table(train_spec, eval_spec, eval_split, split)
    if eval_table is not None:
        _check_eval_columns(eval_table, text_col, label_col)
    report: dict[str, Any] = {"rows_read": len(train_table)}
    train_texts, train_labels = _nonempty_rows(train_table, text_col, label_col, report, "train")
    if eval_table is None:
        id2label, to_id = _label_map(train_labels, None, label_col)
        train, evaluation = _hold_out(
            Split(train_texts, [to_id[v] for v in train_labels]), len(id2label), holdout, seed
        )
        eval_source = f"held out {round(holdout * 100)}% (stratified, seed {seed})"
    else:
        eval_texts, eval_labels = _nonempty_rows(eval_table, text_col, label_col, report, "eval")
        train_labels, eval_labels = _comparable_labels(train_labels, eval_labels, report)
        id2label, to_id = _label_map(train_labels, eval_labels, label_col)
        train = Split(train_texts, [to_id[v] for v in train_labels])
        evaluation = Split(eval_texts, [to_id[v] for v in eval_labels])
    if len({*train.labels}) < 2:
        raise BadInput("the training part has fewer than two classes", field="label_column")
    train = _capped(train, max_train_samples, seed)
    evaluation = _capped(evaluation, max_eval_samples, seed)
    train, pool_index = _budgeted(train, budget, run_seed, report)
    report.update(train_rows=len(train), eval_rows=len(evaluation))
    extra = read_unlabeled(unlabeled, text_col) if unlabeled else []
    if unlabeled:
        report["unlabeled_rows"] = len(extra)
    return PreparedData(train, evaluation, id2label, text_col, label_col, eval_source, report,
                        extra, pool_index)


def _check_options(
    train_spec: str, split: str | None, holdout: float, max_train: int | None,
    max_eval: int | None,
) -> None:
    """The checks that need no data: the row caps, a split of a dataset that has none, the
    held-out fraction."""
    check_caps(max_train, max_eval)
    if split and split != "train" and (train_spec == DEMO_SPEC or is_local_spec(train_spec)):
        raise BadInput(
            f"--split {split}: a {'demo' if train_spec == DEMO_SPEC else 'local'} dataset has "
            "only its train rows; --split applies to hub datasets",
            field="split",
        )
    if not 0 < holdout < 1:
        raise BadInput(
            f"the held-out fraction must be between 0 and 1 (got {holdout})", field="holdout"
        )


def _check_eval_columns(eval_table: Table, text_col: str, label_col: str) -> None:
    """The eval data has the text and label columns found in the training data."""
    for name, what in ((text_col, "text"), (label_col, "label")):
        if name not in eval_table.columns:
            raise BadInput(
                f"eval data {eval_table.source} has no {what} column '{name}' "
                f"(columns: {', '.join(eval_table.names)})",
                field="eval_dataset",
            )


def _nonempty_rows(
    table: Table, text_col: str, label_col: str, report: dict[str, Any], part: str
) -> tuple[list[str], list[Any]]:
    """The texts and labels of the rows of ``table`` (the ``part`` "train" or "eval") whose
    text is not empty; how many were dropped goes to ``report``."""
    texts, labels, dropped = _clean(_texts(table, text_col), label_values(table, label_col))
    report[f"dropped_empty_{part}"] = dropped
    if texts:
        return texts, labels
    if part == "train":
        raise BadInput(f"all {len(table)} texts in column '{text_col}' are empty", field="dataset")
    raise BadInput(f"all texts in the eval data {table.source} are empty", field="eval_dataset")


def _comparable_labels(
    train_labels: list[Any], eval_labels: list[Any], report: dict[str, Any]
) -> tuple[list[Any], list[Any]]:
    """Train and eval labels of one type (strings where their types differ), checked to share
    at least one class; eval classes that never occur in training go to ``report``."""
    if {type(v) for v in eval_labels} != {type(v) for v in train_labels}:
        train_labels = [str(v) for v in train_labels]
        eval_labels = [str(v) for v in eval_labels]
    seen, judged = set(train_labels), set(eval_labels)
    if not seen & judged:  # e.g. names in one file, their ids in the other
        raise BadInput(
            f"none of the eval data's labels ({few_labels(judged)}) occur in the training data "
            f"({few_labels(seen)}); give both with the same labels",
            field="eval_dataset",
        )
    if judged - seen:  # a class the model never sees in training: it cannot predict it
        report["eval_only_labels"] = sorted(map(str, judged - seen))
    return train_labels, eval_labels


def _label_map(
    train_labels: list[Any], eval_labels: list[Any] | None, label_col: str
) -> tuple[dict[int, str], dict[Any, int]]:
    """``build_label_map`` of the labels, refused when there is only one class."""
    id2label, to_id = build_label_map(train_labels, *([] if eval_labels is None else [eval_labels]))
    if len(id2label) < 2:
        only = next(iter(id2label.values()), "?")
        raise BadInput(
            f"label column '{label_col}' has one class only ('{only}'); "
            "classification needs two or more",
            field="label_column",
        )
    return id2label, to_id


def _hold_out(rows: Split, classes: int, holdout: float, seed: int) -> tuple[Split, Split]:
    """(train, eval): ``holdout`` of each class of ``rows`` held out for eval, seeded."""
    if classes * 2 > len(rows):
        raise BadInput(
            f"{classes} classes in {len(rows)} rows: too many classes to hold "
            "out an eval part (need at least two rows per class); give --eval-dataset",
            field="label_column",
        )
    keep, held = stratified_holdout(rows.labels, holdout, seed)
    return _subset(rows, keep), _subset(rows, held)


def _capped(rows: Split, cap: int | None, seed: int) -> Split:
    """A seeded sample of at most ``cap`` of ``rows`` (all of them when ``cap`` is None)."""
    sample = seeded_sample(len(rows), cap, seed)
    return rows if sample is None else _subset(rows, sample)


def _budgeted(
    rows: Split, budget: int | None, seed: int, report: dict[str, Any]
) -> tuple[Split, list[int]]:
    """A label budget's rows of the train pool (stratified, nested, seeded; all of them when
    ``budget`` is None) and their positions in the pool; BadInput when it is larger than the
    pool or smaller than its number of classes."""
    if budget is None:
        return rows, list(range(len(rows)))
    from bertui.core.study import budget_subset, check_budgets

    check_budgets([budget], len(rows), len(set(rows.labels)), flag="--budget")
    report.update(budget=budget, train_pool_rows=len(rows))
    index = budget_subset(rows.labels, budget, seed).tolist()
    return _subset(rows, index), index


def _subset(rows: Split, indices: list[int]) -> Split:
    return Split([rows.texts[i] for i in indices], [rows.labels[i] for i in indices])


def _eval_table(
    train_spec: str, eval_spec: str | None, eval_split: str | None, split: str | None
) -> tuple[Table | None, str]:
    if eval_spec and eval_spec.startswith("@"):
        eval_split, eval_spec = eval_spec[1:], None
    if eval_spec:
        table = read_table(eval_spec, eval_split)
        return table, f"file {table.source}" if is_local_spec(
            eval_spec
        ) else f"dataset {table.source}"
    if train_spec == DEMO_SPEC:
        if eval_split and eval_split != "test":
            raise BadInput(
                f"the demo dataset has no split '{eval_split}' (its splits: train, test)",
                field="eval_split",
            )
        return read_file(demo_files()[1]), "demo test split"
    if not is_local_spec(train_spec):
        repo, config, spec_split = parse_hub_spec(train_spec)
        train_split = split or spec_split or "train"
        if eval_split:
            return read_hub(repo, config, eval_split), f"split {eval_split}"
        available = hub_split_names(repo, config)
        for name in ("validation", "dev", "test"):
            if name in available and name != train_split:
                table = read_hub(repo, config, name)
                labels = next((v for k, v in table.columns.items() if k.lower() in LABEL_NAMES), [])
                if labels and all(v == -1 for v in labels[:100]):
                    continue  # unlabelled test split (GLUE)
                return table, f"split {name}"
    elif eval_split:
        raise BadInput(
            "--eval-split applies to hub datasets; give --eval-dataset FILE", field="eval_split"
        )
    return None, ""


def inspect(
    spec: str,
    *,
    split: str | None = None,
    rows: int = 8,
    text_column: str | None = None,
    label_column: str | None = None,
) -> dict[str, Any]:
    """A preview for the New run form: columns, first rows, inferred columns, label balance."""
    table = read_table(spec, split)
    info: dict[str, Any] = {
        "source": table.source,
        "rows": len(table),
        "columns": table.names,
        "preview": table.rows(rows),
    }
    text_col, label_col = pick_columns(table, text_column, label_column)
    labels = label_values(table, label_col)
    counts = Counter(str(v) for v in labels)
    info.update(
        text_column=text_col,
        label_column=label_col,
        label_counts=dict(sorted(counts.items(), key=lambda kv: kv[0])),
    )
    if len(counts) < 2:
        raise BadInput(f"label column '{label_col}' has one class only", field="label_column")
    return info
