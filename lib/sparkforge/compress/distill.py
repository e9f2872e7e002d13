"""Knowledge distillation: a small student trained on the trained model's soft labels.

1. :func:`write_soft_labels` (Spark): the teacher's fp32 ONNX file scores the train
   split inside ``mapInPandas`` (one session per Python worker, as scoring does) and
   the logits are written as a ``teacher_logits`` column next to the model inputs and
   the label, as Parquet.
2. The training core (:class:`sparkforge.train.loop.Trainer`, launched like training
   by :func:`sparkforge.train.launch.launch`) trains the student with the spec of
   :func:`distill_spec`: each rank reads its share of the soft-label Parquet and
   minimises :class:`DistillLoss`,
   ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, label)``
   (regression: ``alpha * MSE(student, teacher) + (1 - alpha) * MSE(student, label)``).
   The student's epoch is chosen on validation fold 0 by its metric (the other fold
   judges the variant in the gate), with training's early stopping and checkpoints.

The student is a from-scratch model of the same family at ``student_hidden_dim``
width: an ``mlp`` for tabular teachers, and an ``embedding_bag`` over the teacher's
tokenizer vocabulary (no hashed bigrams) for text teachers, MiniLM included.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sparkforge.train.spec import BoundLoss, TrainSpec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

TEACHER_COLUMN = "teacher_logits"
STUDENT_WEIGHTS = "student.safetensors"


def student_spec(teacher: Mapping[str, Any], width: int, vocab_size: int | None = None
                 ) -> dict[str, Any]:
    """The student's model spec for a ``teacher`` spec (see the module docstring)."""
    name = teacher["name"]
    base = {"num_outputs": int(teacher["num_outputs"]), "dropout": teacher.get("dropout", 0.1)}
    if name == "mlp":
        return {"name": "mlp", **base, "input_dim": int(teacher["input_dim"]),
                "hidden_dim": width}
    vocab = int(teacher.get("vocab_size") or vocab_size or 0)
    if vocab < 1:
        raise ValueError(f"a student for {name!r} needs the tokenizer's vocabulary size")
    return {"name": "embedding_bag", **base, "vocab_size": vocab, "embed_dim": width,
            "hidden_dim": width, "bigram_buckets": 0}


def soft_label_df(df: DataFrame, *, model_path: str, sha256: str, inputs: list[str],
                  target: str, batch_size: int = 256, threads: int = 1) -> DataFrame:
    """``df``'s model inputs and ``target`` plus the teacher's ``teacher_logits`` per row."""
    from pyspark.sql import types as T

    from sparkforge import features
    from sparkforge.infer import model_inputs, onnx_session, predict

    # Tabular features stay in their stored (compact) form in the soft-label files.
    cols = [*features.source_columns(inputs, df.columns), target]
    schema = T.StructType([*(df.schema[c] for c in cols),
                           T.StructField(TEACHER_COLUMN, T.ArrayType(T.FloatType()))])

    def _teach(batches: Any) -> Any:
        sess = onnx_session(model_path, sha256, threads)
        for pdf in batches:
            if pdf.empty:
                continue
            logits = predict(sess, model_inputs(pdf, inputs), batch_size)
            res = pdf[cols].copy()
            res[TEACHER_COLUMN] = list(logits.astype(np.float32))
            yield res

    return df.select(*cols).mapInPandas(_teach, schema)


def write_soft_labels(df: DataFrame, dst: Path, **kwargs: Any) -> None:
    """Write :func:`soft_label_df` of ``df`` to ``dst`` (Parquet, overwritten)."""
    soft_label_df(df, **kwargs).write.mode("overwrite").parquet(str(dst))


def _kd_loss(student: Any, teacher: Any, y: Any, *, regression: bool, alpha: float,
             temperature: float, class_weights: Any = None) -> Any:
    import torch.nn.functional as F

    from sparkforge.train.losses import classification_loss

    if regression:
        s = student.squeeze(-1)
        return alpha * F.mse_loss(s, teacher.squeeze(-1)) + (1 - alpha) * F.mse_loss(s, y.float())
    t = temperature
    soft = F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
                    reduction="batchmean", log_target=True) * (t * t)
    return alpha * soft + (1 - alpha) * classification_loss(student, y, class_weights)


@dataclass(frozen=True)
class DistillLoss:
    """The training core's loss for distillation (:class:`~sparkforge.train.spec.Loss`):
    :func:`_kd_loss` of the student's output against the ``teacher_logits`` column and
    the label."""

    alpha: float = 0.7
    temperature: float = 2.0

    @property
    def columns(self) -> tuple[str, ...]:
        return (TEACHER_COLUMN,)

    def bind(self, spec: TrainSpec, device: Any) -> BoundLoss:
        regression, alpha, temperature = spec.regression, self.alpha, self.temperature
        weights = spec.class_weights  # the training's (train/losses.py), for the hard labels

        def kd(out: Any, y: Any, extra: Mapping[str, Any]) -> Any:
            return _kd_loss(out, extra[TEACHER_COLUMN], y, regression=regression,
                            alpha=alpha, temperature=temperature, class_weights=weights)
        return kd


def distill_spec(base: TrainSpec, *, soft_labels: Path, val_dir: Path, out_dir: Path,
                 student: Mapping[str, Any], epochs: int, lr: float, alpha: float,
                 temperature: float) -> TrainSpec:
    """The spec that trains ``student`` on the soft labels, from the training spec
    ``base`` (its schedule, seed, patience, batch size): the student is judged on
    validation fold ``base.val_fold`` by its metric (accuracy / -RMSE), and its best
    weights go to ``out_dir/student.safetensors``."""
    return replace(
        base, model=dict(student), train_path=str(soft_labels.resolve()),
        val_path=str(val_dir.resolve()), out_dir=str(out_dir.resolve()),
        weights_name=STUDENT_WEIGHTS, checkpoint=True, resume=True, epochs=epochs, lr=lr,
        loss=DistillLoss(alpha=alpha, temperature=temperature), select_by="metric",
        target_std=1.0, grad_accum_steps=1, max_steps_per_epoch=0,
        fsdp=False, loader="arrow", converter=None, keep_start=False, name="distill")
