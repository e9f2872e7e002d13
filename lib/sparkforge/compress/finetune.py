"""A short single-process fine-tune on the driver (after pruning).

The rows come in memory (:func:`sparkforge.train.loader.read_split`); the training is
the training core's (:class:`sparkforge.train.loop.Trainer`, one rank, nothing
written). Weights of the best epoch on the rows given as validation (accuracy, or -RMSE
for regression) are kept, so a fine-tune that makes things worse leaves the model as it
was after pruning (epoch 0 is that model's own score). The compress stage gives it
validation fold 0 only (:func:`fold_rows`): fold 1 judges the variant in the gate.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)


def fold_rows(path: Path, columns: list[str], fold: int) -> dict[str, np.ndarray]:
    """``columns`` of the rows of split folder ``path`` in validation ``fold``.

    Data preprocessed before the fold column existed has no folds: all its rows.
    """
    from sparkforge.data.prepare import FOLD
    from sparkforge.train.loader import has_column, read_split

    if not has_column(path, FOLD):
        log.warning("%s has no %r column: every row is used", path, FOLD)
        return read_split(path, columns)
    data = read_split(path, [*columns, FOLD])
    keep = data.pop(FOLD) == fold
    return {k: v[keep] for k, v in data.items()}


def finetune(model: nn.Module, train: Mapping[str, np.ndarray], val: Mapping[str, np.ndarray],
             *, inputs: list[str], target: str, regression: bool, epochs: int, lr: float,
             batch_size: int, max_steps: int = 0, weight_decay: float = 0.01,
             warmup_ratio: float = 0.06, grad_clip: float = 1.0, seed: int = 42,
             class_weights: list[float] | None = None) -> list[dict[str, Any]]:
    """Train ``model`` in place for ``epochs`` (each capped at ``max_steps`` when > 0)
    with the training core (:class:`sparkforge.train.loop.Trainer`), in this process.

    Returns one record per epoch (``epoch`` 0 is the starting point): train loss, the
    validation metric and seconds taken. The best epoch's weights (by the validation
    metric, ties to the later epoch) are loaded at the end.
    """
    from sparkforge.train.loop import Trainer
    from sparkforge.train.spec import TrainSpec

    spec = TrainSpec(
        model={}, inputs=tuple(inputs), target=target, regression=regression,
        out_dir=None, checkpoint=False, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, warmup_ratio=warmup_ratio, grad_clip=grad_clip,
        max_steps_per_epoch=max_steps, seed=seed, patience=epochs, select_by="metric",
        keep_start=True, val_fold=None, name="fine-tune",
        class_weights=tuple(class_weights) if class_weights else None)
    result = Trainer(spec, model=model, train_data=train, val_data=val).fit()
    start = result["start"]
    history: list[dict[str, Any]] = [{"epoch": 0, "val_metric": start["val_metric"]}]
    # The core counts epochs from 0; here epoch 0 is the starting point.
    history += [{**r, "epoch": r["epoch"] + 1} for r in result["history"]]
    for r in history[1:]:
        log.info("fine-tune epoch %d: %s", r["epoch"], r)
    return history
