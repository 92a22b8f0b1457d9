"""Work that a study's runs share, done once per study rather than once per run: the linear
probe's frozen features, and the pre-trained arm of each seed.

The probe's features (the frozen pre-trained encoder's mean-pooled last hidden states) depend on
neither the seed nor the budget: only on the model, the max length and the text. A run of a
study (its config.toml's ``[study] shared`` names the study's ``shared/`` folder) looks them up
in ``shared/probe_features.npz`` by train-pool row (``PreparedData.pool_index``) and computes
only the rows no earlier run of the study computed (and the eval split's only once), then puts
the new rows in. The file::

    pool_index   int64 (m,)      the train-pool rows whose features it holds, ascending
    train        float32 (m, H)  their features
    eval         float32 (n, H)  the eval split's features, in eval order
    eval_labels  int64 (n,)      the eval split's label ids (a check that it is the same split)
    pool_rows    int64 ()        the train pool's size (the same check for the pool)
    precision    str ()          the precision the features were computed in (bf16, fp32)

It is replaced whole (a temp file, then ``os.replace``), so a reader sees a whole file. Runs
going at once (``--parallel``) may each compute rows the other has not put in yet; the last
writer's file wins, and a row it lacks is computed again by a later run (the same numbers, some
work twice). A file that does not load or does not match is ignored and rewritten.
A run outside a study computes its features as before.

The pre-trained arm's answer depends on the seed (its head is seeded) but not on the budget, so
the first run of a seed keeps it in ``shared/pretrained_seed<S>.npz`` (predicted ids and
probabilities, the eval labels, and the random-number state before and after the arm) and the
seed's other runs read it back. Measuring it draws random numbers (each pass of a DataLoader
draws its base seed), so a run that reads it back also sets the generator to the state the arm
left behind: the fine-tune then starts from the same random state as in a standalone run and
ends with the same numbers. It is only read back when the generator's state before the arm is
the one recorded (the same seed, the same draws before); otherwise the arm runs as usual.

A row's features are the same numbers whichever run computes them, up to the last bits of
float rounding (a row is batched with other rows, padded to another length); the tests check
that a study's probe predicts as a standalone run with the same seed and rows does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

FEATURES_FILE = "probe_features.npz"
PRETRAINED_FILE = "pretrained_seed{seed}.npz"


def shared_folder(config: dict[str, Any]) -> Path | None:
    """The study's shared folder that a run's config names, or None (not a study's run)."""
    shared = (config.get("study") or {}).get("shared")
    return Path(shared) if shared else None


def probe_features(ctx: Any, forward: Callable[[Any], Any]) -> tuple[Any, Any]:
    """(eval features, train features) of a run (a ``RunContext``); ``forward`` computes the
    features of an ``Encoded`` split. In a study, looked up in its shared file first."""
    import numpy as np

    folder = shared_folder(ctx.config)
    index = ctx.prepared.pool_index
    if folder is None or index is None:
        return forward(ctx.evaluation), forward(ctx.train)
    pool_rows = int(ctx.prepared.report.get("train_pool_rows", len(ctx.prepared.train)))
    labels = np.asarray(ctx.evaluation.labels, dtype=np.int64)
    precision = ctx.baseline_device().precision
    cache = load_features(folder / FEATURES_FILE, labels, pool_rows, precision)
    rows = np.asarray(index, dtype=np.int64)
    eval_features = cache["eval"] if cache else forward(ctx.evaluation)
    known = cache["pool_index"] if cache else np.zeros(0, dtype=np.int64)
    missing = np.flatnonzero(~np.isin(rows, known))
    new = forward(subset(ctx.train, missing)) if len(missing) else None
    merged_index = np.concatenate([known, rows[missing]])
    parts = [cache["train"]] if cache else []
    merged = np.concatenate(parts + ([new] if new is not None else []))
    order = np.argsort(merged_index, kind="stable")
    merged_index, merged = merged_index[order], merged[order]
    if new is not None or not cache:
        save_features(folder / FEATURES_FILE, {
            "pool_index": merged_index, "train": merged, "eval": eval_features,
            "eval_labels": labels, "pool_rows": np.int64(pool_rows),
            "precision": np.asarray(precision)})
    ctx.rec.log(f"probe features shared by the study: computed {len(missing)} of {len(rows)} "
                f"train rows{'' if cache else ' and the eval rows'}, the rest looked up")
    return eval_features, merged[np.searchsorted(merged_index, rows)]


def subset(encoded: Any, positions: Any) -> Any:
    """The rows of an ``Encoded`` split at ``positions``."""
    from bertui.core.training import Encoded

    return Encoded([encoded.input_ids[i] for i in positions],
                   [encoded.labels[i] for i in positions])


def load_features(path: Path, eval_labels: Any, pool_rows: int,
                  precision: str = "fp32") -> dict[str, Any] | None:
    """The shared file's arrays, or None when there is none, it does not load, or it is of
    another eval split, train pool or precision (a study resumed on another machine)."""
    import numpy as np

    arrays = load_arrays(path, ("pool_index", "train", "eval", "eval_labels", "pool_rows",
                                "precision"))
    if arrays is None:
        return None
    same = (int(arrays["pool_rows"]) == pool_rows and str(arrays["precision"]) == precision
            and np.array_equal(arrays["eval_labels"], eval_labels)
            and len(arrays["train"]) == len(arrays["pool_index"]))
    return arrays if same else None


def load_arrays(path: Path, keys: tuple[str, ...]) -> dict[str, Any] | None:
    """These arrays of a shared ``.npz`` file (no pickle), or None when it is missing, does
    not load or lacks one of them."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}
    except (OSError, KeyError, ValueError):
        return None


def save_features(path: Path, arrays: dict[str, Any]) -> None:
    """Replace the shared file whole (a reader sees the old one or the new one)."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def pretrained_prediction(ctx: Any, measure: Callable[[], Any]) -> Any:
    """The pre-trained arm's ``Prediction`` of a run (a ``RunContext``): ``measure()``
    computes it; in a study, the seed's first run keeps it and the others read it back (see
    the module's docstring)."""
    import numpy as np
    import torch

    from bertui.core.predictions import Prediction

    folder = shared_folder(ctx.config)
    if folder is None:
        return measure()
    path = folder / PRETRAINED_FILE.format(seed=int(ctx.hyper.seed))
    labels = np.asarray(ctx.evaluation.labels, dtype=np.int64)
    before = torch.get_rng_state().numpy().copy()
    precision = ctx.baseline_device().precision
    kept = load_pretrained(path, labels, before, precision)
    if kept is not None:
        torch.set_rng_state(torch.from_numpy(kept["rng_after"].copy()))
        ctx.rec.log("pre-trained arm shared by the study: read back from this seed's first run")
        return Prediction(kept["pred"], kept["probs"])
    prediction = measure()
    save_features(path, {"pred": prediction.pred, "probs": prediction.probs,
                         "eval_labels": labels, "rng_before": before,
                         "rng_after": torch.get_rng_state().numpy().copy(),
                         "precision": np.asarray(precision)})
    return prediction


def load_pretrained(path: Path, eval_labels: Any, rng_before: Any,
                    precision: str = "fp32") -> dict[str, Any] | None:
    """The kept pre-trained arm, or None when there is none, it does not load, or it is of
    another eval split, random state or precision."""
    import numpy as np

    arrays = load_arrays(path, ("pred", "probs", "eval_labels", "rng_before", "rng_after",
                                "precision"))
    if arrays is None:
        return None
    same = (str(arrays["precision"]) == precision
            and np.array_equal(arrays["eval_labels"], eval_labels)
            and np.array_equal(arrays["rng_before"], rng_before)
            and len(arrays["pred"]) == len(eval_labels))
    return arrays if same else None
