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


def test_learning_rate_suits_the_model_size():
    assert models.default_learning_rate(384) == 1e-4
    assert models.default_learning_rate(768) < models.default_learning_rate(384)
    assert models.default_learning_rate(1024) < models.default_learning_rate(768)


def test_loading_uses_safetensors_and_a_seeded_head(tiny_model):
    a = models.load_classifier(tiny_model, id2label={0: "neg", 1: "pos"}, seed=5)
    b = models.load_classifier(tiny_model, id2label={0: "neg", 1: "pos"}, seed=5)
    assert a.config.id2label == {0: "neg", 1: "pos"}
    assert (a.classifier.weight == b.classifier.weight).all()
