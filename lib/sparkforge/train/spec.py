"""What every training rank is handed: one typed, frozen, picklable :class:`TrainSpec`.

Training, distillation and the pruning fine-tune all run the one training core
(:class:`sparkforge.train.loop.Trainer`); they differ only in the spec they hand it (the
data, the model, the loss, the schedule). The driver builds the spec from the
:class:`~sparkforge.config.Config` with :func:`spec_from_config` (one function; each
caller then changes the few fields that are its own with :func:`dataclasses.replace`),
and TorchDistributor pickles it to every rank.

The loss is the pluggable piece: :class:`LabelLoss` (cross-entropy, optionally class
weighted, or MSE on the standardised target) for training and fine-tuning;
distillation plugs in :class:`sparkforge.compress.distill.DistillLoss`. A loss names
the extra batch columns it reads (``columns``) and ``bind`` returns the per-batch
function the training step calls.

This module imports neither torch nor pyspark at import time (the driver reads it while
validating configuration).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from sparkforge.config import Config

# The validation fold that chooses epochs (``data.prepare.SELECT_FOLD``, repeated here so
# that this module stays import-light; a test checks they agree).
SELECT_FOLD = 0

# (model output, target, extra columns as tensors) -> scalar loss
BoundLoss = Callable[[Any, Any, Mapping[str, Any]], Any]


class Loss(Protocol):
    """A training objective: picklable (a frozen dataclass), bound once per rank."""

    @property
    def columns(self) -> tuple[str, ...]:
        """Batch columns the loss reads besides the model inputs and the target."""
        ...

    def bind(self, spec: TrainSpec, device: Any) -> BoundLoss:
        """The per-batch loss for ``spec`` on ``device`` (tensors built once here)."""
        ...


@dataclass(frozen=True)
class LabelLoss:
    """Cross-entropy against the labels (weighted by ``spec.class_weights`` when set), or
    for regression the MSE on the standardised scale (divided by ``spec.target_std``²),
    so that the same learning rate works for targets in units, thousands or millions."""

    @property
    def columns(self) -> tuple[str, ...]:
        return ()

    def bind(self, spec: TrainSpec, device: Any) -> BoundLoss:
        import torch
        import torch.nn.functional as F

        if spec.regression:
            target_var = float(spec.target_std or 1.0) ** 2

            def mse(out: Any, y: Any, extra: Mapping[str, Any]) -> Any:
                return F.mse_loss(out.squeeze(-1), y.float()) / target_var
            return mse
        from sparkforge.train.losses import classification_loss

        weight = (torch.tensor(spec.class_weights, dtype=torch.float32, device=device)
                  if spec.class_weights else None)

        def ce(out: Any, y: Any, extra: Mapping[str, Any]) -> Any:
            return classification_loss(out, y, weight)
        return ce


@dataclass(frozen=True)
class TrainSpec:
    """One training run as every rank sees it (built on the driver, pickled to the ranks).

    Args:
        model: the JSON model spec ``sparkforge.models.build_model`` builds the network
            from (``model/model.json``). Ignored when the caller hands the trainer a
            model object (the pruning fine-tune).
        inputs: the model's input columns, in call order (``["features"]`` or
            ``["input_ids", "attention_mask"]``).
        target: the target column (``label_index``, or ``label`` for regression).
        regression: a regression task (MSE, -RMSE as the metric) instead of classification.
        train_path: folder of Parquet rows to train on (the train split, or the soft
            labels for distillation); None when the caller passes the rows in memory.
        val_path: folder of the validation split; None: rows in memory or none.
        val_fold: only validation rows of this fold choose the epoch (fold 1 is kept
            for the compression gate); None: every row. Data without a fold column uses
            every row.
        out_dir: where the best weights (``weights_name``) and, with ``checkpoint``, the
            per-epoch checkpoints (``checkpoint/epoch-NNNN``) are written, by rank 0.
            None: nothing is written and the best weights are loaded back into the model
            at the end (in-process fine-tunes).
        weights_name: file name of the best weights under ``out_dir``.
        checkpoint: write an atomic checkpoint every epoch (needs ``out_dir``).
        resume: continue from the newest complete checkpoint under ``out_dir`` (the
            driver clears old checkpoints of a fresh run, so this is safe to leave on:
            a relaunched rank then continues the same run).
        epochs: the most epochs; early stopping may end sooner.
        batch_size: rows per rank per micro-batch.
        lr: AdamW's peak learning rate.
        weight_decay: AdamW's weight decay.
        warmup_ratio: fraction of the optimizer steps of linear warmup, then linear decay
            to 0 (``sparkforge.train.loop.make_scheduler``).
        grad_clip: max gradient norm; 0 disables clipping.
        grad_accum_steps: micro-batches per optimizer step.
        max_steps_per_epoch: cap on micro-batches per epoch; 0: the whole epoch.
        seed: seeds the model build, the data order and (offset by rank) dropout.
        patience: stop after this many epochs without a better selection score.
        select_by: ``loss`` (validation loss) or ``metric`` (accuracy / -RMSE) picks the
            kept epoch; ties go to the later epoch.
        keep_start: score the starting weights too, and keep them when no epoch beats
            them (a fine-tune that makes things worse changes nothing).
        loss: the training objective (:class:`LabelLoss` by default).
        class_weights: per-class weights of the cross-entropy (index order); None: equal.
        target_std: the regression target's standard deviation (the loss is taken on the
            standardised scale).
        fsdp: shard parameters with FSDP2 instead of replicating them with DDP.
        loader: ``arrow`` (pyarrow, each rank reads its row groups) or ``petastorm``.
        converter: the petastorm ``SparkDatasetConverter`` (``loader="petastorm"`` only).
        threads: torch threads per rank; 0 leaves torch's setting alone (driver-side runs).
        use_cuda: train on the rank's GPU (NCCL, bf16 autocast, fused AdamW) when CUDA is
            available.
        compile: run the training steps through ``torch.compile`` (the first steps compile;
            evaluation and the saved weights use the module as it is).
        name: what log lines call the run (``train``, ``distill``, ``fine-tune``).

    Example::

        spec = dataclasses.replace(spec_from_config(cfg, model=..., train_path=...,
                                                    out_dir=...), epochs=2)
    """

    model: Mapping[str, Any]
    inputs: tuple[str, ...]
    target: str
    regression: bool = False
    train_path: str | None = None
    val_path: str | None = None
    val_fold: int | None = SELECT_FOLD
    out_dir: str | None = None
    weights_name: str = "model.safetensors"
    checkpoint: bool = True
    resume: bool = False
    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    grad_clip: float = 1.0
    grad_accum_steps: int = 1
    max_steps_per_epoch: int = 0
    seed: int = 42
    patience: int = 4
    select_by: Literal["loss", "metric"] = "loss"
    keep_start: bool = False
    loss: Loss = field(default_factory=LabelLoss)
    class_weights: tuple[float, ...] | None = None
    target_std: float = 1.0
    fsdp: bool = False
    loader: Literal["arrow", "petastorm"] = "arrow"
    converter: Any = None
    threads: int = 0
    use_cuda: bool = False
    compile: bool = False
    name: str = "train"

    def __post_init__(self) -> None:
        # Plain tuples: a list from the caller would make the frozen spec mutable.
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if self.class_weights is not None:
            object.__setattr__(self, "class_weights",
                               tuple(float(w) for w in self.class_weights))
        for name in ("epochs", "batch_size", "grad_accum_steps", "patience"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainSpec.{name}={getattr(self, name)!r}: use a positive "
                                 "integer")
        if self.max_steps_per_epoch < 0 or self.threads < 0:
            bad = "max_steps_per_epoch" if self.max_steps_per_epoch < 0 else "threads"
            raise ValueError(f"TrainSpec.{bad}={getattr(self, bad)!r}: use 0 or more")
        if self.select_by not in ("loss", "metric"):
            raise ValueError(f"TrainSpec.select_by={self.select_by!r}: use loss or metric")
        if self.loader not in ("arrow", "petastorm"):
            raise ValueError(f"TrainSpec.loader={self.loader!r}: use arrow or petastorm")
        # loader='petastorm' without a converter is refused where the loader is made
        # (train/loader.py::make_loader): the train job builds the spec first, then the
        # converter from the spec's columns, then replaces it in.
        if self.checkpoint and self.out_dir is None:
            raise ValueError("TrainSpec.checkpoint=True needs out_dir (or checkpoint=False)")
        if not self.inputs:
            raise ValueError("TrainSpec.inputs is empty: name the model's input columns")

    def columns(self) -> list[str]:
        """Every column a training batch needs: inputs, target, the loss's extras."""
        return [*self.inputs, self.target, *self.loss.columns]


def spec_from_config(cfg: Config, *, model: Mapping[str, Any], **fields: Any) -> TrainSpec:
    """The :class:`TrainSpec` of ``cfg``'s training settings (``train.*``, the task's
    inputs and target) for ``model``; ``fields`` set or override any other field
    (paths, ``class_weights``, distillation's loss and schedule, ...)."""
    t = cfg.train
    base: dict[str, Any] = {
        "model": dict(model),
        "inputs": ("input_ids", "attention_mask") if cfg.is_text else ("features",),
        "target": "label" if cfg.is_regression else "label_index",
        "regression": cfg.is_regression,
        "epochs": t.epochs, "batch_size": t.batch_size, "lr": t.lr,
        "weight_decay": t.weight_decay, "warmup_ratio": t.warmup_ratio,
        "grad_clip": t.grad_clip, "grad_accum_steps": t.grad_accum_steps,
        "max_steps_per_epoch": t.max_steps_per_epoch, "seed": t.seed,
        "patience": t.early_stopping_patience, "select_by": t.select_by,
        "fsdp": t.fsdp, "loader": t.loader, "compile": t.compile,
    }
    unknown = set(fields) - {f.name for f in dataclasses.fields(TrainSpec)}
    if unknown:
        raise TypeError(f"spec_from_config: no TrainSpec field(s) {sorted(unknown)}")
    return TrainSpec(**{**base, **fields})
