"""Model specs: the embedded default, local folders, the hub cache, and the safety rules."""

from __future__ import annotations

import json
import shutil

import pytest

from bertui.core import models
from bertui.core.errors import BadInput


def test_default_is_the_embedded_minilm():
    source = models.resolve_model("default")
    assert source.origin == "embedded"
    assert (source.path / "model.safetensors").exists()
    info = models.model_info(source)
    assert info["model_type"] == "bert"
    assert info["layers"] == 6 and info["hidden_size"] == 384
    assert info["parameters"] == 22_713_728  # read from the safetensors header alone
    assert info["weights"] == "safetensors"


def test_local_folder(tiny_model):
    source = models.resolve_model(str(tiny_model))
    assert source.origin == "local"
    assert models.model_info(source)["hidden_size"] == 32


def test_missing_folder_and_not_a_model(tmp_path):
    with pytest.raises(BadInput, match="no model folder"):
        models.resolve_model(str(tmp_path / "nope"))
    with pytest.raises(BadInput, match="not a model folder"):
        models.resolve_model(str(tmp_path))


def test_pickled_weights_are_refused_unless_allowed(tiny_model, tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model, folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(BadInput, match="only pickled weights"):
        models.resolve_model(str(folder))
    assert models.resolve_model(str(folder), allow_pickle=True).path == folder.resolve()


def test_remote_code_is_refused_unless_trusted(tiny_model, tmp_path):
    folder = tmp_path / "remote"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_x.XModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(BadInput, match="--trust-remote-code"):
        models.resolve_model(str(folder))


def test_offline_hub_id_not_cached(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BadInput, match="not in the local Hugging Face cache"):
        models.resolve_model("someone/not-cached-model")


def test_hub_cache_is_used_offline(tiny_model, tmp_path, monkeypatch):
    """A model in the HF cache layout resolves with no network, and is listed."""
    hub = tmp_path / "hub"
    snap = hub / "models--someone--tiny-bert" / "snapshots" / ("a" * 40)
    shutil.copytree(tiny_model, snap)
    (hub / "models--someone--tiny-bert" / "refs").mkdir(parents=True)
    (hub / "models--someone--tiny-bert" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    source = models.resolve_model("someone/tiny-bert")
    assert source.origin == "hub-cache" and source.path == snap
    assert [m["spec"] for m in models.list_cached_models()] == ["someone/tiny-bert"]


def test_a_cached_config_without_weights_is_fetched_when_online(tiny_model, tmp_path,
                                                                 monkeypatch):
    """A cache that holds only config.json and the tokenizer (a tokenizer-only download) is not
    taken for the model: online, the hub is asked (the worker downloads the rest); offline,
    the line says that the weights are missing."""
    hub = tmp_path / "hub"
    snap = hub / "models--someone--partial" / "snapshots" / ("b" * 40)
    shutil.copytree(tiny_model, snap)
    (snap / "model.safetensors").unlink()
    (hub / "models--someone--partial" / "refs").mkdir(parents=True)
    (hub / "models--someone--partial" / "refs" / "main").write_text("b" * 40)
    import huggingface_hub
    import huggingface_hub.constants as c

    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(hub))
    asked = []
    monkeypatch.setattr("bertui.core.hub.go_offline_if_unreachable", lambda: True)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info",
                        lambda self, repo, **kw: asked.append(repo))  # the hub, answering
    source = models.resolve_model("someone/partial", download=False)
    assert source.origin == "hub" and source.path is None and asked == ["someone/partial"]
    monkeypatch.setattr("bertui.core.hub.go_offline_if_unreachable", lambda: False)
    with pytest.raises(BadInput, match="no weights"):
        models.resolve_model("someone/partial", download=False)


def test_learning_rate_suits_the_model_size():
    assert models.default_learning_rate(384) == 1e-4
    assert models.default_learning_rate(768) < models.default_learning_rate(384)
    assert models.default_learning_rate(1024) < models.default_learning_rate(768)


def test_loading_uses_safetensors_and_a_seeded_head(tiny_model):
    a = models.load_classifier(tiny_model, id2label={0: "neg", 1: "pos"}, seed=5)
    b = models.load_classifier(tiny_model, id2label={0: "neg", 1: "pos"}, seed=5)
    assert a.config.id2label == {0: "neg", 1: "pos"}
    assert (a.classifier.weight == b.classifier.weight).all()


def headed_model(tiny_model, tmp_path, id2label):
    """The tiny BERT with a trained-looking head of its own, for ``id2label``."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(5)
    model = BertForSequenceClassification.from_pretrained(
        str(tiny_model), id2label=id2label, label2id={v: k for k, v in id2label.items()})
    with torch.no_grad():
        model.classifier.weight.normal_(0, 1.0)
        model.classifier.bias.copy_(torch.arange(len(id2label), dtype=torch.float32))
    folder = tmp_path / "headed"
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        if (tiny_model / name).exists():
            shutil.copy(tiny_model / name, folder / name)
    return folder, model.eval()


def test_a_model_with_its_own_head_for_other_labels(tiny_model, tmp_path):
    """Another number of labels: a new head (it failed with transformers' size error); the same
    labels in another order: the head's rows follow the data's order, so the head as loaded
    still answers with the labels it was trained for; other names: said."""
    import torch

    folder, original = headed_model(tiny_model, tmp_path, {0: "sports", 1: "arts", 2: "news"})
    ids = torch.tensor([[2, 7, 9, 3]])
    before = original(input_ids=ids).logits[0]

    model, info = models.load_classifier(folder, id2label={0: "no", 1: "yes"}, seed=0,
                                         output_loading_info=True)
    assert {key[0] for key in info["mismatched_keys"]} == {"classifier.weight",
                                                            "classifier.bias"}
    assert model.config.id2label == {0: "no", 1: "yes"} and model.bertui_head_note is None

    model = models.load_classifier(folder, id2label={0: "arts", 1: "news", 2: "sports"})
    after = model.eval()(input_ids=ids).logits[0]
    torch.testing.assert_close(after, before[[1, 2, 0]])  # arts, news, sports
    assert "rows were put in the data's label order" in model.bertui_head_note

    model = models.load_classifier(folder, id2label={0: "a", 1: "b", 2: "c"})
    torch.testing.assert_close(model.eval()(input_ids=ids).logits[0], before)
    assert "trained for other labels (sports, arts, news)" in model.bertui_head_note


def test_training_a_model_whose_head_has_other_labels(tiny_model, tmp_path, bertui_home):
    """The real worker on the demo data (2 labels) with a 3-label model: a new head."""
    from conftest import train_tiny

    folder, _ = headed_model(tiny_model, tmp_path, {0: "sports", 1: "arts", 2: "news"})
    metrics, run = train_tiny(folder, bertui_home, "--no-probe")
    assert metrics["pretrained"]["note"] == "untrained classification head"
    assert metrics["finetuned"]["accuracy"] is not None
    from conftest import run_bertui

    proc = run_bertui("predict", run.name, "a lovely evening", "--json", home=bertui_home,
                      timeout=120)  # the pre-trained model is rebuilt with its new head
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert "negative" in json.dumps(answer) and "sports" not in json.dumps(answer)
