"""A short single-process fine-tune on the driver (after pruning).

Reads the train split with :func:`sparkforge.train.loader.read_split`; every step is
plain torch. Weights of the best epoch on the rows given as validation (accuracy, or
-RMSE for regression) are kept, so a fine-tune that makes things worse leaves the model
as it was after pruning (epoch 0 is that model's own score). The compress stage gives it
validation fold 0 only (:func:`fold_rows`): fold 1 judges the variant in the gate.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sparkforge.train.losses import classification_loss

log = logging.getLogger(__name__)

LOG_EVERY = 50  # steps between progress lines


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


def evaluate(model: nn.Module, data: Mapping[str, np.ndarray], inputs: list[str], target: str,
             regression: bool, batch_size: int = 256) -> float:
    """Accuracy (classification) or -RMSE (regression) of ``model`` on ``data``."""
    from sparkforge.train.loader import trim_padding

    n = len(data[target])
    if n == 0:
        return math.nan
    model.eval()
    correct, sq = 0, 0.0
    with torch.no_grad():
        for s in range(0, n, batch_size):
            b = trim_padding({k: v[s:s + batch_size] for k, v in data.items()})
            out = model(*(torch.from_numpy(np.ascontiguousarray(b[k])) for k in inputs)).float()
            y = torch.from_numpy(b[target])
            if regression:
                sq += float(((out.squeeze(-1) - y.float()) ** 2).sum())
            else:
                correct += int((out.argmax(-1) == y).sum())
    return -math.sqrt(sq / n) if regression else correct / n


def finetune(model: nn.Module, train: Mapping[str, np.ndarray], val: Mapping[str, np.ndarray],
             *, inputs: list[str], target: str, regression: bool, epochs: int, lr: float,
             batch_size: int, max_steps: int = 0, weight_decay: float = 0.01,
             warmup_ratio: float = 0.06, grad_clip: float = 1.0, seed: int = 42,
             class_weights: list[float] | None = None) -> list[dict[str, Any]]:
    """Train ``model`` in place for ``epochs`` (each capped at ``max_steps`` when > 0).

    Returns one record per epoch (``epoch`` 0 is the starting point): train loss, the
    validation metric and seconds taken. The best epoch's weights are loaded at the end.
    """
    from sparkforge.train.loader import ShardedLoader, trim_padding

    torch.manual_seed(seed)
    loader = ShardedLoader(dict(train), 0, 1, batch_size, seed)
    steps = len(loader) if max_steps <= 0 else min(len(loader), max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    total, warm = max(1, steps * epochs), int(steps * epochs * warmup_ratio)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warm) if s < warm
        else max(0.0, 1.0 - (s - warm) / max(1, total - warm)))
    loss_fn: nn.Module = nn.MSELoss() if regression else nn.CrossEntropyLoss()
    best = evaluate(model, val, inputs, target, regression)
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict[str, Any]] = [{"epoch": 0, "val_metric": best}]
    for epoch in range(1, epochs + 1):
        model.train()
        t0, loss_sum, seen = time.time(), 0.0, 0
        for step, raw in enumerate(loader.epoch(epoch)):
            if step >= steps:
                break
            b = trim_padding(raw)
            out = model(*(torch.from_numpy(np.ascontiguousarray(b[k])) for k in inputs))
            y = torch.from_numpy(b[target])
            loss = (loss_fn(out.squeeze(-1), y.float()) if regression
                    else classification_loss(out, y, class_weights))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(y)
            seen += len(y)
            if (step + 1) % LOG_EVERY == 0:
                log.info("fine-tune epoch %d: step %d/%d, loss %.4f, %.1fs", epoch, step + 1,
                         steps, loss_sum / max(seen, 1), time.time() - t0)
        metric = evaluate(model, val, inputs, target, regression)
        history.append({"epoch": epoch, "train_loss": loss_sum / max(seen, 1),
                        "val_metric": metric, "epoch_s": time.time() - t0, "steps": steps})
        log.info("fine-tune epoch %d: %s", epoch, history[-1])
        if not metric <= best:  # NaN (no val rows) counts as an improvement
            best, best_state = metric, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return history
