"""The run schema: every option is one field, and the CLI's flags, the New run form's widgets,
config.toml and the worker's hyper-parameters all agree with it."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import shutil
from pathlib import Path

import pytest

from bertui.cli import UsageError, build_parser, main
from bertui.core.errors import BadInput
from bertui.core.runs import Run, create_run
from bertui.core.schema import (
    ARM_NAMES,
    DEFAULT_ARMS,
    FIELD,
    FIELDS,
    RunOptions,
    arms_of,
    fields_in,
    from_config,
    options_from_flags,
    to_config,
    validate_options,
)
from bertui.core.training import Hyper
from bertui.tui.screens.new_run import STUDY_INPUTS

RECORDED = Path(__file__).resolve().parent / "tui" / "fixtures" / "runs"
# The options that have a flag and no widget: the form stays as it is (its snapshots), and
# these are for scripts and measurements (checkpoint pace, overhead, unsafe model files).
CLI_ONLY = {"checkpoint_minutes", "monitor_events", "monitor_telemetry", "allow_pickle",
            "trust_remote_code", "budget", "data_seed", "epoch_eval", "nnodes", "node_rank",
            "rdzv_endpoint"}


def parse_train(*flags: str):
    return build_parser().parse_args(["train", *flags])


# --- the CLI ----------------------------------------------------------------------------------


def test_every_field_has_a_flag_whose_default_is_the_fields(capsys):
    args = parse_train()
    with pytest.raises(SystemExit):
        parse_train("--help")
    help_text = capsys.readouterr().out
    for field in FIELDS:
        assert field.flag in help_text, field.name
        assert getattr(args, field.name) == field.default, field.name
    assert options_from_flags(vars(args)) == RunOptions()


def test_flags_make_the_options_they_name():
    args = parse_train("--epochs", "1.5", "--lr", "5e-5", "--batch-size", "8", "--seed", "0",
                       "--no-compact-vocab", "--fast-dropout", "--no-events", "--name", "x",
                       "--holdout", "0.3")
    options = options_from_flags(vars(args))
    assert (options.epochs, options.learning_rate, options.batch_size, options.seed) == (
        1.5, 5e-5, 8, 0)
    assert options.compact_vocab is False and options.fast_dropout is True
    assert options.monitor_events is False and options.monitor_telemetry is True
    assert (options.name, options.holdout) == ("x", 0.3)


@pytest.mark.parametrize("flags, says", [
    (("--batch-size", "-3"), "argument --batch-size: must be between 1 and 8192 (got -3)"),
    (("--seed", "-1"), "argument --seed: must be ≥ 0 (got -1)"),
    (("--max-length", "-128"), "argument --max-length: must be between 8 and 8192 tokens"),
    (("--max-train-samples", "-5"), "argument --max-train-samples: must be a positive number"),
    (("--max-eval-samples", "-1"), "argument --max-eval-samples: must be a positive number"),
])
def test_a_negative_whole_number_is_refused_by_its_flag(flags, says, capsys, bertui_home):
    """The bug: ``positive_int`` took "-3" (only a later check refused some of them)."""
    with pytest.raises(UsageError) as refused:
        parse_train(*flags)
    assert says in str(refused.value)
    assert main(["train", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err
    assert not (bertui_home / "runs").exists()


def test_seed_zero_is_a_seed():
    assert parse_train("--seed", "0").seed == 0


def test_arms_flag_and_no_probe():
    default = options_from_flags(vars(parse_train()))
    assert default.arms == DEFAULT_ARMS and default.probe
    two = options_from_flags(vars(parse_train("--arms", "pretrained,finetuned")))
    assert two.arms == ("pretrained", "finetuned") and not two.probe
    assert options_from_flags(vars(parse_train("--no-probe"))) == two
    assert options_from_flags(vars(parse_train("--arms", "finetuned, probe,finetuned"))).arms == (
        "probe", "finetuned")  # the schema's order, once each
    config = to_config(two)
    assert config["arms"] == ["pretrained", "finetuned"] and config["train"]["probe"] is False
    assert arms_of(config) == ["pretrained", "finetuned"]
    for flags, says in (
        (("--arms", "pretrained,bogus,finetuned"),
         f"argument --arms: must be among {', '.join(ARM_NAMES)} (got bogus)"),
        (("--arms", "pretrained,probe"), "argument --arms: must include finetuned"),
    ):
        with pytest.raises(UsageError) as refused:
            parse_train(*flags)
        assert says in str(refused.value)
    with pytest.raises(BadInput) as refused:  # --no-probe is checked with the arms it leaves
        validate_options(options_from_flags({"arms": ("probe",), "no_probe": True}))
    assert refused.value.field == "arms" and str(refused.value).startswith("--arms must include")


# --- the checks -------------------------------------------------------------------------------


@pytest.mark.parametrize("name, value, says", [
    ("epochs", 0.0, "--epochs must be > 0 and ≤ 1000 (got 0.0)"),
    ("epochs", math.nan, "--epochs must be > 0 and ≤ 1000 (got nan)"),
    ("learning_rate", 2.0, "--lr must be > 0 and ≤ 1 (got 2.0)"),
    ("batch_size", 0, "--batch-size must be between 1 and 8192 (got 0)"),
    ("max_length", 4, "--max-length must be between 8 and 8192 tokens (got 4)"),
    ("max_train_samples", 0, "--max-train-samples must be a positive number of rows (got 0)"),
    ("seed", -1, "--seed must be ≥ 0 (got -1)"),
    ("precision", "fp8", "--precision must be one of auto, bf16, fp16, fp32 (got fp8)"),
    ("holdout", 1.0, "--holdout must be between 0 and 1 (got 1.0)"),
    ("checkpoint_minutes", -1.0, "--checkpoint-minutes must be ≥ 0"),
    ("name", "a/b", "--name must be at most 100 characters, without '/'"),
    ("name", "x" * 101, "--name must be at most 100 characters, without '/'"),
    ("arms", ("pretrained", "probe"), "--arms must include finetuned"),
    ("arms", ("finetuned", "bogus"), "--arms must be among pretrained, probe, finetuned"),
])
def test_a_bad_value_is_refused_naming_its_field(name, value, says):
    with pytest.raises(BadInput) as refused:
        validate_options(dataclasses.replace(RunOptions(), **{name: value}))
    assert refused.value.field == name
    assert str(refused.value).startswith(says)
    assert "\n" not in str(refused.value)


def test_the_defaults_pass_the_checks():
    validate_options(RunOptions())


# --- config.toml ------------------------------------------------------------------------------


def test_a_config_written_before_a_field_existed_loads_with_its_default(tmp_path):
    """A recorded run of an older bertui: no arms, no [monitor], no speed-ups, probe = false."""
    path = tmp_path / "old"
    shutil.copytree(RECORDED / "20260102-101500-0ddba1", path)
    config = Run.load(path).config
    assert "arms" not in config and "monitor" not in config
    options = from_config(config)
    assert options.arms == ("pretrained", "finetuned")  # [train] probe = false
    assert (options.model, options.dataset, options.epochs) == ("bert-base-uncased",
                                                                "nyu-mll/glue:sst2", 2.0)
    assert options.eval_dataset == "validation" and options.batch_size == 256
    for name in ("holdout", "checkpoint_minutes", "compact_vocab", "monitor_events",
                 "allow_pickle", "split"):
        assert getattr(options, name) == FIELD[name].default, name
    hyper = Hyper.from_config(config["train"])
    assert (hyper.epochs, hyper.batch_size, hyper.probe) == (2.0, 256, False)
    assert hyper.group_by_length is FIELD["group_by_length"].default
    assert from_config({}) == RunOptions()
    assert Hyper.from_config({}) == Hyper()


def test_options_go_through_config_toml_and_back(bertui_home):
    changed = {
        "model": "/models/mine", "dataset": "/data/train.csv", "split": "train",
        "eval_dataset": "/data/eval.csv", "eval_split": "test", "holdout": 0.25,
        "text_column": "sentence", "label_column": "stars", "epochs": 2.0,
        "learning_rate": 3e-5, "batch_size": 32, "max_length": 256, "precision": "bf16",
        "max_train_samples": 500, "max_eval_samples": 100, "seed": 7, "name": "round-trip",
        "arms": ("pretrained", "finetuned"), "group_by_length": False, "compact_vocab": False,
        "fast_dropout": True, "torch_compile": True, "auto_batch_size": True,
        "checkpoint_minutes": 0.5, "epoch_eval": False, "monitor_events": False,
        "monitor_telemetry": False,
        "allow_pickle": True, "trust_remote_code": True, "budget": 64, "data_seed": 3,
        "unlabeled": "/data/more.txt", "tapt_steps": 50,
        "nproc": 4, "nnodes": 2, "node_rank": 1, "rdzv_endpoint": "node0:29400",
    }
    assert set(changed) == {f.name for f in FIELDS}  # a new field: add it here
    options = RunOptions(**changed)
    assert all(getattr(options, f.name) != f.default for f in FIELDS)
    run = create_run(to_config(options), bertui_home)  # the real file, through TOML
    text = run.config_path.read_text()
    assert text.startswith('name = "round-trip"')
    for table in ("[model]", "[data]", "[train]", "[monitor]"):
        assert table in text
    assert run.config["arms"] == ["pretrained", "finetuned"]
    assert run.config["train"]["probe"] is False  # for readers older than the arms
    assert from_config(run.config) == options
    assert Hyper.from_config(run.config["train"]).checkpoint_minutes == 0.5


def test_build_config_writes_the_arms_and_the_probe_they_imply(tiny_model, tmp_path):
    from bertui.core.launch import build_config

    data = tmp_path / "reviews.csv"
    data.write_text("text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(40)))
    options = RunOptions(model=str(tiny_model), dataset=str(data), arms=("pretrained",
                                                                          "finetuned"))
    config = build_config(options)
    assert config["arms"] == ["pretrained", "finetuned"] and config["train"]["probe"] is False
    assert config["data"]["train"] == str(data.resolve()) and config["created"] > 0
    assert config["labels"]["id2label"] == {"0": "a", "1": "b"}
    read = from_config(config)
    assert read.arms == options.arms and (read.text_column, read.label_column) == (
        "text", "label")


def test_hyper_reads_every_train_option_with_the_schemas_default():
    hyper = Hyper()
    for field in fields_in("train"):
        assert getattr(hyper, field.name) == field.default, field.name
    table = {"epochs": 5, "seed": 3, "unknown_key": 1, "warmup_ratio": 0.2}
    hyper = Hyper.from_config(table)
    assert hyper.epochs == 5.0 and isinstance(hyper.epochs, float)
    assert (hyper.seed, hyper.warmup_ratio) == (3, 0.2)


def test_config_toml_keeps_its_layout():
    config = to_config(RunOptions())
    assert list(config) == ["name", "arms", "model", "data", "train", "monitor", "launch"]
    assert config["launch"] == {"nproc": 1, "nnodes": 1, "node_rank": 0, "rdzv_endpoint": None}
    assert config["model"]["spec"] == "default" and config["data"]["train"] == "demo"
    assert config["monitor"] == {"events": True, "telemetry": True}


# --- the New run form -------------------------------------------------------------------------


def form_test(tmp_path, monkeypatch, check) -> None:
    """Run ``check(pilot, screen)`` on the New run form (the app as the TUI tests build it)."""
    from tui.conftest import build_app, settle

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setattr("bertui.core.models.list_cached_models", lambda: [])
    app = build_app(tmp_path / "bertui-home", tmp_path / "config")

    async def go() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await check(pilot, app.screen)

    asyncio.run(go())


def assert_widgets_hold_the_defaults(screen) -> None:
    from textual.widgets import Checkbox, Input, Select

    from bertui.tui.widgets.name_choices import NameChoices

    kinds = {"input": Input, "select": Select, "checkbox": Checkbox, "checkboxes": NameChoices}
    for field in FIELDS:
        if field.widget is None:
            assert field.name in CLI_ONLY, f"{field.name} has no form widget"
            continue
        widget = screen.query_one(f"#{field.widget_id}", kinds[field.widget.kind])
        if field.name in ("text_column", "label_column"):
            # blank ("inferred") by default; the dataset check fills in what it inferred
            assert field.default is None and widget.value == field.name.split("_")[0]
            continue
        assert widget.value == field.to_widget(field.default), field.name
    inferred = dataclasses.replace(RunOptions(), text_column="text", label_column="label")
    assert screen.options() == inferred


def test_every_field_has_a_form_widget_holding_its_default(tmp_path, monkeypatch):
    async def check(pilot, screen) -> None:
        assert {f.name for f in FIELDS if f.widget is None} == CLI_ONLY
        assert_widgets_hold_the_defaults(screen)
        labels = {str(label.content) for label in screen.query(".field-label")}
        # every label but the study's own fields (budgets, seeds: not run options) is a field's
        assert {f.widget.label for f in FIELDS if f.widget} == labels - set(STUDY_INPUTS)

    form_test(tmp_path, monkeypatch, check)


def test_the_form_reads_its_widgets_through_the_schema_and_resets_to_the_defaults(
        tmp_path, monkeypatch):
    from textual.widgets import Checkbox, Input, Select
    from tui.conftest import settle

    async def check(pilot, screen) -> None:
        for name, value in (("epochs", "1"), ("holdout", "25%"), ("batch_size", "auto"),
                            ("max_train_samples", "1_000"), ("eval", "validation"),
                            ("name", "mine")):
            screen.query_one(f"#{name}", Input).value = value
        screen.query_one("#probe", Checkbox).value = False
        screen.query_one("#torch_compile", Checkbox).value = True
        screen.query_one("#precision", Select).value = "fp32"
        screen.query_one("#label_column", Select).value = "text"
        await settle(pilot)
        options = screen.options()
        assert (options.epochs, options.holdout, options.batch_size) == (1.0, 0.25, None)
        assert options.max_train_samples == 1000 and options.name == "mine"
        assert options.eval_split == "validation" and options.eval_dataset is None
        assert options.arms == ("pretrained", "finetuned") and not options.probe
        assert options.torch_compile and options.precision == "fp32"
        screen.query_one("#eval", Input).value = "held-out.csv"
        assert screen.options().eval_dataset == "held-out.csv"
        assert screen.options().eval_split is None
        screen.action_defaults()
        await settle(pilot, 0.8)
        assert_widgets_hold_the_defaults(screen)

    form_test(tmp_path, monkeypatch, check)
