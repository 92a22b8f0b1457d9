"""The run schema: every run option as one typed field, and config.toml read and written
through it.

An option is one attribute of ``RunOptions``, declared with ``option(...)``: its type (the
annotation), its default, its bounds, its help, the config.toml table it lives in, its CLI flag
and its New run form widget. All the rest is made from those fields: the ``bertui train`` flags
(cli.py), the form's fields, their parsing and the reset (tui/screens/new_run.py), the one-line
checks (``validate_options``), config.toml (``to_config``, ``from_config``) and the worker's
hyper-parameters (``training.Hyper``). To add an option, add one attribute to ``RunOptions``
and read it where it is used; a default is written here and nowhere else.

It also holds the arms contract the engine reads (``ARM_NAMES``, ``DEFAULT_ARMS``,
``arms_of``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from bertui.core.errors import BadInput

# The arms a run can compare, in the order they run and are shown.
ARM_NAMES = ("pretrained", "probe", "finetuned", "scratch", "tapt", "setfit")
DEFAULT_ARMS = ("pretrained", "probe", "finetuned")

# Options that only one arm reads: set without that arm, they are refused.
ARM_OPTIONS = {"unlabeled": "tapt", "tapt_steps": "tapt"}

SECTIONS = ("model", "data", "train", "monitor", "launch")  # config.toml's tables, in order
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
AUTO_WORDS = ("", "auto", "all", "none")  # what a form's optional number reads as None

T = TypeVar("T")


class FieldError(BadInput):
    """A value that one field refuses. ``reason`` is the message without the flag's name (the
    CLI's parser puts its own "argument --flag:" before it)."""

    def __init__(self, message: str, field: str, reason: str) -> None:
        super().__init__(message, field=field)
        self.reason = reason


@dataclass(frozen=True)
class Widget:
    """How the New run form shows a field."""

    group: str  # model | dataset | details | training | training-2 | speed-ups
    kind: str  # input | select | checkbox | checkboxes (one per ``boxes`` name of a list field)
    label: str
    placeholder: str = ""  # an input's placeholder, a select's prompt
    text: str = ""  # a checkbox's text
    tooltip: str | None = None
    hint: str = ""  # after the widget ("tokens")
    id: str = ""  # the widget's id where it is not the field's name
    boxes: tuple[tuple[str, str], ...] = ()  # checkboxes: (name, text) for each name it ticks


@dataclass(frozen=True)
class Spec:
    """What ``option(...)`` says about a field besides its name, type and default."""

    section: str | None  # config.toml table; None: top level
    key: str = ""  # its key there (default: the field's name)
    flag: str = ""  # its CLI flag (default: from the name; a bool that is on: --no-NAME)
    help: str | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is refused
    high_open: bool = False
    unit: str = ""  # in the message: "between 8 and 8192 tokens"
    choices: tuple[str, ...] = ()
    required: tuple[str, ...] = ()  # a list field: names it must hold
    required_why: str = ""
    rule: str = ""  # the message's rule where the bounds do not say it
    max_chars: int = 0
    forbidden: str = ""  # characters a text may not hold
    percent: bool = False  # the form reads "20%" as 0.2, and blank as the default
    drop_flags: tuple[tuple[str, str, str], ...] = ()  # (flag, name it drops, help): --no-probe
    widget: Widget | None = None  # None: CLI only


def option(default: T, section: str | None, **spec: Any) -> T:
    """A ``RunOptions`` attribute: its default and its ``Spec`` (a ``dataclasses.field``,
    typed as its default so that the annotation is checked against it)."""
    return dataclasses.field(default=default, metadata={"spec": Spec(section, **spec)})


def speed_up(default: bool, label: str, text: str, tooltip: str, help: str | None = None) -> bool:
    """A ``[train]`` toggle that the form shows among its speed-ups."""
    widget = Widget("speed-ups", "checkbox", label, text=text, tooltip=tooltip)
    return option(default, "train", help=help, widget=widget)


EVAL_INPUT = Widget(
    "details", "input", "eval", id="eval", placeholder="a split name or a file (default: automatic)"
)


@dataclass
class RunOptions:
    """Everything a user chooses for a run: the CLI's flags, the New run form, config.toml.

    Each attribute: ``option(default, config.toml table, bounds…, help=, widget=)``."""

    # fmt: off
    # The form's Model and Dataset sections, and the dataset's details.
    model: str = option(
        "default", "model", key="spec", help="'default', a local folder or a hub id",
        widget=Widget("model", "input", "model", placeholder="default, a hub id or a folder"))
    dataset: str = option(
        "demo", "data", key="train",
        help="'demo', a csv/tsv/json/jsonl/parquet file or a hub dataset ID[:CONFIG][@SPLIT]",
        widget=Widget("dataset", "input", "dataset",
                      placeholder="demo, a file (csv tsv json jsonl parquet) or a hub id"))
    split: str | None = option(
        None, "data", help="train split of a hub dataset (default: train)",
        widget=Widget("details", "input", "train split", placeholder="train (default)"))
    eval_dataset: str | None = option(
        None, "data", key="eval", help="a separate eval file or dataset (or @SPLIT)",
        widget=EVAL_INPUT)
    eval_split: str | None = option(
        None, "data", help="eval split of a hub dataset", widget=EVAL_INPUT)
    holdout: float = option(
        0.2, "data", low=0, high=1, low_open=True, high_open=True, percent=True,
        help="fraction held out for eval when there is no eval data (default 0.2)",
        widget=Widget("details", "input", "holdout"))
    text_column: str | None = option(
        None, "data", widget=Widget("details", "select", "text column", placeholder="(inferred)"))
    label_column: str | None = option(
        None, "data", widget=Widget("details", "select", "label column", placeholder="(inferred)"))
    # Training: the left column.
    epochs: float = option(
        3.0, "train", low=0, high=1000, low_open=True, widget=Widget("training", "input", "epochs"))
    learning_rate: float | None = option(
        None, "train", flag="--lr", low=0, high=1, low_open=True,
        help="learning rate (default: by model size, 1e-4 for MiniLM)",
        widget=Widget("training", "input", "learning rate", placeholder="auto (by model size)"))
    batch_size: int | None = option(
        None, "train", low=1, high=8192, help="default 16 on CPU, 64 on GPU",
        widget=Widget("training", "input", "batch size", placeholder="auto (16 CPU, 64 GPU)"))
    max_length: int = option(
        128, "train", low=8, high=8192, unit="tokens",
        widget=Widget("training", "input", "max length", hint="tokens"))
    precision: str = option(
        "auto", "train", choices=PRECISIONS, help="auto|bf16|fp16|fp32",
        widget=Widget("training", "select", "precision"))
    # Training: the right column.
    max_train_samples: int | None = option(
        None, "data", low=1, rule="must be a positive number of rows",
        widget=Widget("training-2", "input", "train cap", placeholder="all rows"))
    max_eval_samples: int | None = option(
        None, "data", low=1, rule="must be a positive number of rows",
        widget=Widget("training-2", "input", "eval cap", placeholder="all rows"))
    seed: int = option(0, "train", low=0, widget=Widget("training-2", "input", "seed"))
    name: str | None = option(
        None, None, max_chars=100, forbidden="/\n",
        rule="must be at most 100 characters, without '/'",
        widget=Widget("training-2", "input", "run name", placeholder="automatic"))
    arms: tuple[str, ...] = option(
        DEFAULT_ARMS, None, choices=ARM_NAMES, required=("finetuned",),
        required_why="the run's model is the fine-tuned one",
        help=f"the arms to compare, comma-separated (default {','.join(DEFAULT_ARMS)}; "
             "finetuned is required)",
        drop_flags=(("--no-probe", "probe", "skip the linear probe"),),
        widget=Widget("training-2", "checkboxes", "compare",
                      boxes=(("probe", "linear probe"), ("scratch", "from scratch"),
                             ("tapt", "TAPT (adapt, then fine-tune)"))))
    # The tapt arm's options.
    unlabeled: str | None = option(
        None, "data",
        help="unlabeled texts for the tapt arm: a text file (one text a line) or a "
             "csv/tsv/json/jsonl/parquet file's text column",
        widget=Widget("details", "input", "unlabeled",
                      placeholder="optional: texts for TAPT (a file)"))
    tapt_steps: int | None = option(
        None, "train", low=1, rule="must be a positive number of steps",
        help="masked-LM steps of the tapt arm (default: 10 passes over its texts, at most 500)",
        widget=Widget("training", "input", "TAPT steps", placeholder="auto (10 passes, ≤ 500)"))
    # The speed-ups (two columns under the training ones).
    group_by_length: bool = speed_up(
        True, "batches", "grouped by length",
        "Batch texts of similar length together: less padding")
    compact_vocab: bool = speed_up(
        True, "embeddings", "only rows in use",
        "Train only the word-embedding rows the data uses: the same model, faster steps",
        help="train every word-embedding row, not only those the data uses")
    fast_dropout: bool = speed_up(
        False, "dropout", "fast masks (CPU)",
        "Draw dropout masks from 64-bit random words: the same rate, a faster CPU step, "
        "another random stream than a plain Trainer's",
        help="on CPU, draw dropout masks from 64-bit random words: a faster step, another "
             "random stream than torch's dropout (see README)")
    torch_compile: bool = speed_up(
        False, "compile", "torch.compile", "Compile the model first (pays off on long GPU runs)")
    auto_batch_size: bool = speed_up(
        False, "memory", "auto batch size",
        "Halve the batch and retry when the GPU runs out of memory",
        help="on out-of-memory, retry with a smaller batch")
    # CLI only (no widget).
    budget: int | None = option(
        None, "data", low=1, rule="must be a positive number of rows",
        help="train on a stratified, seeded subset of this many rows of the train set (a "
             "study's label budget: a larger budget's rows contain a smaller one's)")
    data_seed: int | None = option(
        None, "data", low=0,
        help="seed of the held-out eval split and the row caps (default: --seed; a study "
             "fixes it, so that all its runs have one eval split)")
    epoch_eval: bool = option(
        True, "train", flag="--no-epoch-eval",
        help="evaluate once, at the end, not after every epoch (the same model: the skipped "
             "evaluations' random draws are replayed; no eval curve while it trains; a "
             "study's runs do this)")
    checkpoint_minutes: float = option(
        2.0, "train", low=0,
        help="save a checkpoint at least this often (default 2; 0 = each epoch only)")
    monitor_events: bool = option(
        True, "monitor", key="events", flag="--no-events",
        help="write only the essential events (for overhead measurements)")
    monitor_telemetry: bool = option(True, "monitor", key="telemetry", flag="--no-telemetry")
    allow_pickle: bool = option(
        False, "model", help="allow pickled (*.bin) weights, which can run code when loaded")
    trust_remote_code: bool = option(
        False, "model", help="run code from the model repository (only for repositories you trust)")
    # How the run's worker is started: one process, or torchrun (bertui.core.distributed).
    nproc: int = option(
        1, "launch", low=1, high=1024,
        help="processes for this run (one a GPU): N > 1 trains with torchrun --nproc-per-node N "
             "(data-parallel; default 1)",
        widget=Widget("training", "input", "processes", hint="GPUs (torchrun)"))
    nnodes: int = option(
        1, "launch", low=1, high=4096,
        help="machines of a multi-node run (torchrun --nnodes; each runs bertui train with the "
             "same --rdzv-endpoint and its own --node-rank)")
    node_rank: int = option(
        0, "launch", low=0, help="this machine's rank in a multi-node run (0 writes the run)")
    rdzv_endpoint: str | None = option(
        None, "launch", max_chars=300, forbidden=" \n", rule="must be HOST:PORT",
        help="HOST:PORT of the c10d rendezvous of a multi-node run (node 0's address)")
    # fmt: on

    @property
    def probe(self) -> bool:
        """Whether the linear probe is one of the arms (config.toml's ``[train] probe``)."""
        return "probe" in self.arms


@dataclass(frozen=True)
class Field:
    """One run option: ``RunOptions``' attribute with its type, default and ``Spec``."""

    name: str
    kind: type  # str, int, float, bool or tuple (a list of names)
    optional: bool  # None is a value: "auto", "all rows", "inferred"
    default: Any
    spec: Spec

    @property
    def key(self) -> str:
        return self.spec.key or self.name

    @property
    def flag(self) -> str:
        if self.spec.flag:
            return self.spec.flag
        dashed = self.name.replace("_", "-")
        return f"--no-{dashed}" if self.kind is bool and self.default else f"--{dashed}"

    @property
    def widget(self) -> Widget | None:
        return self.spec.widget

    @property
    def widget_id(self) -> str:
        return (self.widget.id if self.widget else "") or self.name

    # --- text to value ------------------------------------------------------------------------

    def parse(self, text: str) -> Any:
        """The value a flag's text says (not yet checked); FieldError if it does not parse."""
        if self.kind is tuple:
            names = {n.strip() for n in text.split(",") if n.strip()}
            known = [n for n in self.spec.choices if n in names]  # in the schema's order
            return tuple(known + sorted(names - set(known)))
        if self.kind not in (int, float):
            return text
        try:
            return self.kind(text.strip().replace("_", ""))
        except ValueError:
            word = "a whole number" if self.kind is int else "a number"
            reason = f"'{text}' is not {word}"
            raise FieldError(reason, self.name, reason) from None

    def from_input(self, text: str) -> Any:
        """The value a form input's text says: blank is None where None is allowed (and
        "auto", "all", "none" for a number), blank is the default otherwise for a text;
        a percent field reads "20%" as 0.2."""
        stripped = text.strip()
        auto = self.kind in (int, float) and stripped.replace("_", "").lower() in AUTO_WORDS
        if self.optional and (not stripped or auto):
            return None
        if not stripped and (self.kind is str or self.spec.percent):
            return self.default
        if self.spec.percent and stripped.endswith("%"):
            return self.parse(stripped[:-1]) / 100
        return self.parse(stripped)

    def to_input(self, value: Any) -> str:
        """A value as a form input's text (the inverse of ``from_input``)."""
        if value is None:
            return ""
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    def to_widget(self, value: Any) -> Any:
        """A value as its form widget holds it: an input's text, a checkbox's state, the
        names of a list that its checkboxes tick, a select's choice."""
        widget = self.widget
        if widget is None or widget.kind == "select":
            return value
        if widget.kind == "input":
            return self.to_input(value)
        if widget.kind == "checkboxes":
            return tuple(name for name, _ in widget.boxes if name in value)
        return bool(value)

    def from_widget(self, raw: Any) -> Any:
        """The value a form widget holds (a select's blank as None); FieldError for an input
        whose text does not parse."""
        widget = self.widget
        if widget is None:
            return self.default
        if widget.kind == "input":
            return self.from_input(str(raw))
        if widget.kind == "checkboxes":  # the names ticked, and those it has no box for
            ticked = {name for name, _ in widget.boxes} & set(raw)
            fixed = {name for name in self.default if name not in dict(widget.boxes)}
            return tuple(n for n in self.spec.choices if n in ticked | fixed)
        if widget.kind == "checkbox":
            return bool(raw)
        return raw if raw is not None or self.optional else self.default

    # --- checks -------------------------------------------------------------------------------

    def check(self, value: Any) -> None:
        """FieldError (one line, naming the flag and the field) if the value is refused."""
        reason = self.problem(value)
        if reason:
            raise FieldError(f"{self.flag} {reason}", self.name, reason)

    def problem(self, value: Any) -> str | None:
        """What is wrong with a value, as "must be …" (None: nothing)."""
        if value is None:
            return None if self.optional else "must be set"
        if self.kind is bool:
            return None if isinstance(value, bool) else f"must be true or false (got {value})"
        if self.kind in (int, float):
            return self._number_problem(value)
        if self.kind is tuple:
            return self._names_problem(value)
        if not isinstance(value, str):
            return f"must be a text (got {value!r})"
        if self.spec.choices and value not in self.spec.choices:
            return f"{self.rule} (got {value})"
        too_long = self.spec.max_chars and len(value) > self.spec.max_chars
        if too_long or any(c in value for c in self.spec.forbidden):
            return self.rule
        return None

    def _number_problem(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number (got {value!r})"
        if self.kind is int and not float(value).is_integer():
            return f"must be a whole number (got {value})"
        s = self.spec
        below = s.low is not None and (value < s.low or (s.low_open and value == s.low))
        above = s.high is not None and (value > s.high or (s.high_open and value == s.high))
        inside = math.isfinite(value) and not below and not above
        return None if inside else f"{self.rule} (got {value})"

    def _names_problem(self, value: Any) -> str | None:
        s = self.spec
        names = tuple(value) if isinstance(value, (tuple, list)) else (value,)
        unknown = [str(n) for n in names if n not in s.choices]
        if unknown:
            return f"{self.rule} (got {', '.join(unknown)})"
        missing = [n for n in s.required if n not in names]
        if missing:
            why = f": {s.required_why}" if s.required_why else ""
            return f"must include {', '.join(missing)}{why} (got {','.join(names) or 'none'})"
        return None

    @property
    def rule(self) -> str:
        """The field's rule in words: "must be between 1 and 8192", "must be > 0 and ≤ 1"."""
        s = self.spec
        if s.rule:
            return s.rule
        if s.choices:
            return ("must be among " if self.kind is tuple else "must be one of ") + ", ".join(
                s.choices
            )
        unit = f" {s.unit}" if s.unit else ""
        low, high = _bound(s.low), _bound(s.high)
        if s.low is not None and s.high is not None:
            if s.low_open == s.high_open:
                return f"must be between {low} and {high}{unit}"
            return (
                f"must be {'>' if s.low_open else '≥'} {low} and "
                f"{'<' if s.high_open else '≤'} {high}{unit}"
            )
        if s.low is not None:
            return f"must be {'>' if s.low_open else '≥'} {low}{unit}"
        if s.high is not None:
            return f"must be {'<' if s.high_open else '≤'} {high}{unit}"
        return "is not valid"


def _bound(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _fields_of(cls: type) -> tuple[Field, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and (
            type(None) in args
        )
        kind = next(a for a in args if a is not type(None)) if optional else hint
        out.append(
            Field(f.name, typing.get_origin(kind) or kind, optional, f.default, f.metadata["spec"])
        )
    return tuple(out)


FIELDS: tuple[Field, ...] = _fields_of(RunOptions)
FIELD: dict[str, Field] = {f.name: f for f in FIELDS}


def fields_in(section: str | None) -> tuple[Field, ...]:
    """The fields that config.toml keeps in one table (None: at the top level)."""
    return tuple(f for f in FIELDS if f.spec.section == section)


def validate_options(options: RunOptions) -> None:
    """The cheap checks (no model or data is read), field by field: FieldError (a BadInput
    naming the field) for the first value refused."""
    for field in FIELDS:
        field.check(getattr(options, field.name))
    for name, arm in ARM_OPTIONS.items():
        if getattr(options, name) is not None and arm not in options.arms:
            reason = f"is for the {arm} arm: add {arm} to --arms"
            raise FieldError(f"{FIELD[name].flag} {reason}", name, reason)
    missing = missing_extras(options.arms)
    if missing:
        raise FieldError(f"{FIELD['arms'].flag} {missing}", "arms", missing)
    check_launch(options)


def check_launch(options: RunOptions) -> None:
    """The torchrun options together: a multi-node run names its rendezvous and a node rank
    below its node count; the setfit arm trains in one process."""
    problem: tuple[str, str] | None = None
    endpoint = options.rdzv_endpoint
    if options.nnodes > 1 and not endpoint:
        problem = ("rdzv_endpoint", "must be set for a multi-node run (--nnodes > 1): HOST:PORT")
    elif endpoint and not endpoint.rpartition(":")[2].isdigit():
        problem = ("rdzv_endpoint", f"must be HOST:PORT (got {endpoint})")
    elif options.node_rank >= options.nnodes:
        problem = ("node_rank", f"must be below --nnodes {options.nnodes} "
                                f"(got {options.node_rank})")
    elif "setfit" in options.arms and options.nproc * options.nnodes > 1:
        problem = ("nproc", "must be 1 with the setfit arm (it trains in one process)")
    if problem:
        name, reason = problem
        raise FieldError(f"{FIELD[name].flag} {reason}", name, reason)


# The arms that need an optional extra: the modules they import, and the extra that has them.
ARM_EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "setfit": (("setfit", "sentence_transformers"), "setfit"),
}


def module_available(name: str) -> bool:
    """Whether ``name`` can be imported here, told without importing it (cheap enough for the
    form's checks on every change)."""
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing_extras(arms: tuple[str, ...] | list[str]) -> str | None:
    """What an arm lacks, in words ("setfit needs the setfit library, …: pip install
    'bertui[setfit]'"), for the first of ``arms`` whose library is not installed; None if none."""
    for arm in arms:
        modules, extra = ARM_EXTRAS.get(arm, ((), ""))
        missing = [m for m in modules if not module_available(m)]
        if missing:
            return (f"{arm} needs the {missing[0]} library, an optional extra: "
                    f"pip install 'bertui[{extra}]'")
    return None


def options_from_flags(values: Mapping[str, Any]) -> RunOptions:
    """RunOptions from parsed CLI flags (argparse's namespace as a dict, keyed by field name);
    a field's drop flags (``--no-probe``) take their name out of its list."""
    chosen: dict[str, Any] = {}
    for field in FIELDS:
        value = values.get(field.name, field.default)
        for flag, name, _help in field.spec.drop_flags:
            if values.get(drop_dest(flag)):
                value = tuple(v for v in value if v != name)
        chosen[field.name] = value
    return RunOptions(**chosen)


def drop_dest(flag: str) -> str:
    """argparse's destination of a drop flag: ``--no-probe`` → ``no_probe``."""
    return flag.lstrip("-").replace("-", "_")


# --- config.toml ------------------------------------------------------------------------------


def to_config(options: RunOptions) -> dict[str, Any]:
    """config.toml's content for these options: top-level ``name`` and ``arms``, then the
    ``[model] [data] [train] [monitor]`` tables. ``[train] probe`` is kept too (derived from the
    arms) for readers that predate the arms."""
    config: dict[str, Any] = {}
    for field in fields_in(None):
        value = getattr(options, field.name)
        config[field.key] = list(value) if isinstance(value, tuple) else value
    for section in SECTIONS:
        config[section] = {f.key: getattr(options, f.name) for f in fields_in(section)}
    config["train"]["probe"] = options.probe
    return config


def read_table(section: str | None, table: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options one config.toml table holds, by field name; a missing one at its default,
    a whole number where a float is meant as a float, a list as a tuple."""
    table = table or {}
    return {f.name: _coerce(f, table.get(f.key, f.default)) for f in fields_in(section)}


def from_config(config: Mapping[str, Any]) -> RunOptions:
    """The options a config.toml holds (a field it lacks takes its default, so a run written
    before that field existed still loads); the arms as ``arms_of`` reads them."""
    values: dict[str, Any] = {}
    for section in (None, *SECTIONS):
        values.update(read_table(section, config if section is None else config.get(section)))
    values["arms"] = tuple(arms_of(dict(config)))
    return RunOptions(**values)


def _coerce(field: Field, value: Any) -> Any:
    if field.kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if field.kind is tuple and isinstance(value, list):
        return tuple(value)
    return value


def arms_of(config: dict[str, Any]) -> list[str]:
    """The arms a run's config names (top-level ``arms = [...]``). A config written before
    arms existed has none: it ran the three, less the probe where ``[train] probe = false``."""
    arms = config.get("arms")
    if isinstance(arms, list) and arms:
        return [str(a) for a in arms]
    probe = (config.get("train") or {}).get("probe", True)
    return [a for a in DEFAULT_ARMS if probe or a != "probe"]
