"""Dataset loading: every file format, column inference, label maps, splits."""

from __future__ import annotations

import csv
import json

import pytest

from bertui.core import data
from bertui.core.errors import BadInput

ROWS = [
    (f"sentence number {i} is {'good' if i % 2 else 'bad'}", "pos" if i % 2 else "neg")
    for i in range(40)
]


def write(path, kind, rows=ROWS, text="text", label="label"):
    if kind in ("csv", "tsv"):
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, delimiter="," if kind == "csv" else "\t")
            w.writerow([text, label])
            w.writerows(rows)
    elif kind == "json":
        path.write_text(json.dumps([{text: t, label: lab} for t, lab in rows]))
    elif kind == "jsonl":
        path.write_text("".join(json.dumps({text: t, label: lab}) + "\n" for t, lab in rows))
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({text: [r[0] for r in rows], label: [r[1] for r in rows]}), path)
    return path


@pytest.mark.parametrize("kind", ["csv", "tsv", "json", "jsonl", "parquet"])
def test_every_format_loads_the_same_rows(tmp_path, kind):
    path = write(tmp_path / f"d.{kind}", kind)
    table = data.read_table(str(path))
    assert len(table) == 40
    assert table.columns["text"][3] == ROWS[3][0]
    prepared = data.prepare(str(path))
    assert prepared.id2label == {0: "neg", 1: "pos"}
    assert len(prepared.train) + len(prepared.eval) == 40
    assert len(prepared.eval) == 8  # 20 % held out
    assert "held out 20%" in prepared.eval_source


def test_holdout_is_stratified_and_seeded(tmp_path):
    rows = [(f"text {i}", "a" if i < 30 else "b") for i in range(40)]
    path = write(tmp_path / "d.csv", "csv", rows)
    p1 = data.prepare(str(path), seed=3)
    p2 = data.prepare(str(path), seed=3)
    p3 = data.prepare(str(path), seed=4)
    assert p1.eval.texts == p2.eval.texts
    assert p1.eval.texts != p3.eval.texts
    assert p1.label_counts("eval") == {"a": 6, "b": 2}
    assert not set(p1.eval.texts) & set(p1.train.texts)


def test_demo_dataset_ships_with_its_own_split():
    prepared = data.prepare("demo")
    assert prepared.eval_source == "demo test split"
    assert len(prepared.train) >= 320 and len(prepared.eval) >= 80
    assert prepared.label_counts("train")["positive"] == prepared.label_counts("train")["negative"]
    assert not set(prepared.train.texts) & set(prepared.eval.texts)
    assert len(set(prepared.train.texts)) == len(prepared.train.texts)


def test_columns_are_inferred_by_name_and_content(tmp_path):
    path = tmp_path / "q.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "question", "coarse", "score"])
        for i in range(30):
            w.writerow(
                [i, f"What is thing number {i} called in the long question?", "AB"[i % 2], i * 1.5]
            )
    table = data.read_table(str(path))
    assert data.pick_columns(table, None, None) == ("question", "coarse")


def test_column_override(tmp_path):
    path = write(tmp_path / "d.csv", "csv", text="body", label="mood")
    prepared = data.prepare(str(path), text_column="body", label_column="mood")
    assert (prepared.text_column, prepared.label_column) == ("body", "mood")


def test_integer_labels_keep_their_order(tmp_path):
    rows = [(f"t{i}", str([10, 2, 7][i % 3])) for i in range(30)]
    prepared = data.prepare(str(write(tmp_path / "d.csv", "csv", rows)))
    assert prepared.id2label == {0: "2", 1: "7", 2: "10"}


def test_string_labels_map_to_sorted_ids_across_train_and_eval(tmp_path):
    train = write(
        tmp_path / "train.csv", "csv", [(f"t{i}", "HUM" if i % 2 else "LOC") for i in range(20)]
    )
    evalf = write(tmp_path / "eval.csv", "csv", [("x", "ABBR"), ("y", "LOC"), ("z", "HUM")])
    prepared = data.prepare(str(train), str(evalf))
    assert prepared.id2label == {0: "ABBR", 1: "HUM", 2: "LOC"}
    assert prepared.eval.labels == [0, 2, 1]
    assert prepared.eval_source.startswith("file ")


def test_eval_labels_must_share_something_with_training(tmp_path):
    """Names in the training file and their ids in the eval file were silently four classes
    (0, 1, neg, pos), every eval row of a class never trained: accuracy 0."""
    train = write(tmp_path / "train.csv", "csv")
    evalf = write(tmp_path / "eval.csv", "csv", [(f"e{i}", i % 2) for i in range(10)])
    with pytest.raises(BadInput, match=r"none of the eval data's labels \(0, 1\) occur in the "
                                       r"training data \(neg, pos\)") as caught:
        data.prepare(str(train), str(evalf))
    assert caught.value.field == "eval_dataset"
    partly = write(tmp_path / "partly.csv", "csv", [("a", "neg"), ("b", "pos"), ("c", "meh")])
    prepared = data.prepare(str(train), str(partly))  # one class the model never sees: said
    assert prepared.report["eval_only_labels"] == ["meh"]


def test_a_lone_surrogate_in_json_text_becomes_a_replacement_character(tmp_path):
    from transformers import BertTokenizerFast

    path = tmp_path / "tweets.jsonl"
    rows = [json.dumps({"text": t, "label": lab}) for t, lab in ROWS]
    rows[3] = '{"text": "cut off mid emoji \\ud83d", "label": "pos"}'
    path.write_text("\n".join(rows) + "\n")
    assert json.loads(rows[3])["text"].endswith("\ud83d")
    prepared = data.prepare(str(path), holdout=0.25)
    texts = prepared.train.texts + prepared.eval.texts
    fixed = [t for t in texts if t.startswith("cut off")]
    assert fixed == ["cut off mid emoji \ufffd"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cut", "off"]))
    BertTokenizerFast(vocab_file=str(vocab))(texts)  # every text tokenizes


def test_empty_texts_are_dropped_and_counted(tmp_path):
    rows = ROWS[:20] + [("", "pos"), ("   ", "neg")]
    prepared = data.prepare(str(write(tmp_path / "d.csv", "csv", rows)))
    assert prepared.report["dropped_empty_train"] == 2
    assert len(prepared.train) + len(prepared.eval) == 20


def test_caps_take_a_seeded_sample_like_datasets_shuffle(tmp_path):
    from datasets import Dataset

    path = write(tmp_path / "d.csv", "csv")
    train = write(tmp_path / "e.csv", "csv", ROWS[:10])
    prepared = data.prepare(str(path), str(train), max_train_samples=7, max_eval_samples=3, seed=0)
    assert len(prepared.train) == 7 and len(prepared.eval) == 3
    expected = Dataset.from_dict({"t": [r[0] for r in ROWS]}).shuffle(seed=0).select(range(7))["t"]
    assert prepared.train.texts == list(expected)


def test_hub_spec_parsing():
    assert data.parse_hub_spec("nyu-mll/glue:sst2") == ("nyu-mll/glue", "sst2", None)
    assert data.parse_hub_spec("stanfordnlp/imdb@test") == ("stanfordnlp/imdb", None, "test")
    assert data.is_local_spec("./x.csv") and data.is_local_spec("d.tsv")
    assert not data.is_local_spec("nyu-mll/glue:sst2")


def test_offline_hub_dataset_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BadInput, match="not in the local Hugging Face cache"):
        data.read_table("someone/not-a-cached-dataset")


@pytest.mark.parametrize(
    "labels,match",
    [
        (["0.5", "1.5"], "holds floats"),
        (["same", "same"], "one class only"),
        (["a", ""], "label missing on"),
    ],
)
def test_bad_labels(tmp_path, labels, match):
    rows = [(f"text {i}", labels[i % 2]) for i in range(20)]
    with pytest.raises(BadInput, match=match):
        data.prepare(str(write(tmp_path / "d.csv", "csv", rows)))


def test_inspect_gives_a_preview_and_the_label_balance():
    info = data.inspect("demo", rows=5)
    assert info["text_column"] == "text" and info["label_column"] == "label"
    assert len(info["preview"]) == 5
    assert set(info["label_counts"]) == {"negative", "positive"}


def test_real_trec_data(shared_data):
    prepared = data.prepare(
        str(shared_data / "trec" / "train.csv"),
        str(shared_data / "trec" / "test.csv"),
        max_train_samples=1000,
    )
    assert (prepared.text_column, prepared.label_column) == ("question", "coarse_label")
    assert list(prepared.id2label.values()) == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert len(prepared.train) == 1000 and len(prepared.eval) == 499


def test_the_eval_split_found_at_creation_is_the_one_the_worker_reads(tiny_model, monkeypatch):
    """A hub dataset with a validation split: the worker must not look for it again (the hub
    client's split listing turns any error into "no splits", and the worker would then hold
    out 20 % of train: another eval set, less training data). The hub is replaced by two
    local tables here."""
    from bertui.core.engine import prepare_data
    from bertui.core.launch import RunOptions, build_config

    tables = {
        "train": data.Table({"text": [t for t, _ in ROWS], "label": [lab for _, lab in ROWS]},
                            "someone/set@train"),
        "validation": data.Table({"text": ["fine", "poor", "good", "bad"],
                                  "label": ["pos", "neg", "pos", "neg"]},
                                 "someone/set@validation"),
    }
    monkeypatch.setattr(data, "read_hub", lambda repo, config, split: tables[split])
    monkeypatch.setattr(data, "hub_split_names", lambda repo, config: list(tables))
    config = build_config(RunOptions(model=str(tiny_model), dataset="someone/set"))
    assert config["data"]["eval_split"] == "validation"
    assert config["data"]["eval_source"] == "split validation"
    monkeypatch.setattr(data, "hub_split_names", lambda repo, config: [])  # a hub hiccup
    prepared = prepare_data(config)
    assert prepared.eval_source == "split validation" and len(prepared.eval) == 4
    assert len(prepared.train) == len(ROWS)
