"""``predictions.npz``: every arm's prediction for every eval row, beside the eval label ids.

The file (``Run.predictions_path``) is a plain numpy ``.npz`` archive, no pickled objects, so
``np.load(path, allow_pickle=False)`` reads it::

    labels          int64 (n,)     the eval split's label ids, in eval order
    label_names     str   (k,)     the label of each id (config.toml's id2label, in id order)
    arms            str   (a,)     the arms with predictions, in the order they ran
    <arm>.pred      int64 (n,)     that arm's predicted label id for each eval row
    <arm>.probs     float32 (n, k) that arm's class probabilities for each eval row

Row ``i`` of every array is the same eval example (``metrics.json``'s ``errors`` and the eval
data's order), so any two arms can be compared row by row: ``(z["probe.pred"] ==
z["labels"]).mean()`` is the probe's accuracy. The engine rewrites the file atomically (a temp
file, then ``os.replace``) after each arm and at the end of a run.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from numpy.typing import NDArray


@dataclass
class Prediction:
    """One arm's answer on the eval split: the predicted label id and the class
    probabilities of every row, in eval order."""

    pred: NDArray[Any]  # int64 (n,)
    probs: NDArray[Any]  # float32 (n, k)

    @classmethod
    def of_probs(cls, probs: Any) -> Prediction:
        """From class probabilities (n, k): the predicted id is the most probable class."""
        import numpy as np

        p = np.asarray(probs, dtype=np.float32)
        return cls(p.argmax(-1).astype(np.int64), p)


def write_predictions(
    path: Path, labels: Any, label_names: list[str], arms: dict[str, Prediction]
) -> None:
    """Replace ``path`` with the eval label ids and each arm's predictions (atomically: a
    reader sees the old file or the new one, never half of one)."""
    import numpy as np

    arrays: dict[str, Any] = {
        "labels": np.asarray(labels, dtype=np.int64),
        "label_names": np.asarray(label_names, dtype=str),
        "arms": np.asarray(list(arms), dtype=str),
    }
    for name, p in arms.items():
        arrays[f"{name}.pred"] = np.asarray(p.pred, dtype=np.int64)
        arrays[f"{name}.probs"] = np.asarray(p.probs, dtype=np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buffer.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_predictions(path: Path) -> tuple[NDArray[Any] | None, dict[str, Prediction]]:
    """The eval label ids and each arm's predictions in ``path``; ``(None, {})`` when there is
    no such file or it is not one (a run made before predictions.npz existed)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            arms = {
                str(name): Prediction(z[f"{name}.pred"], z[f"{name}.probs"])
                for name in z["arms"].tolist()
            }
            return z["labels"], arms
    except (OSError, KeyError, ValueError):
        return None, {}
