"""Knowledge distillation: a small student trained on the trained model's soft labels.

1. :func:`write_soft_labels` (Spark): the teacher's fp32 ONNX file scores the train
   split inside ``mapInPandas`` (one session per Python worker, as scoring does) and
   the logits are written as a ``teacher_logits`` column next to the model inputs and
   the label, as Parquet.
2. :func:`distill_fn` runs in every TorchDistributor rank (DDP, gloo on CPU): each
   rank reads the soft-label Parquet, takes its share of the rows and minimises
   ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, label)``
   (regression: ``alpha * MSE(student, teacher) + (1 - alpha) * MSE(student, label)``).
   Rank 0 scores validation fold ``val_fold`` each epoch (fold 0: the other fold
   judges the variant in the gate), keeps the best student's weights and stops early
   like training does.

The student is a from-scratch model of the same family at ``student_hidden_dim``
width: an ``mlp`` for tabular teachers, and an ``embedding_bag`` over the teacher's
tokenizer vocabulary (no hashed bigrams) for text teachers, MiniLM included.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

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
    """``df``'s model inputs and ``target`` plus the teacher's ``teacher_logits`` per row
    (the scoring core of :mod:`sparkforge.infer.predictor`, one session per worker)."""
    import pyarrow as pa
    from pyspark.sql import types as T

    from sparkforge.infer import ModelRef, list_array, map_predictions

    cols = [*inputs, target]
    schema = T.StructType([*(df.schema[c] for c in cols),
                           T.StructField(TEACHER_COLUMN, T.ArrayType(T.FloatType()))])

    def emit(batch: pa.RecordBatch, logits: np.ndarray) -> pa.RecordBatch:
        arrays = [batch.column(c) for c in cols]
        arrays.append(list_array(logits.astype(np.float32, copy=False), pa.float32()))
        return pa.RecordBatch.from_arrays(arrays, names=[*cols, TEACHER_COLUMN])

    return map_predictions(df, ModelRef(model_path, sha256, threads), inputs=inputs,
                           columns=cols, schema=schema, emit=emit, batch_size=batch_size)


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


def distill_fn(params: dict[str, Any]) -> dict[str, Any]:
    """One TorchDistributor rank of distillation; every rank returns rank 0's history."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from sparkforge.compress.finetune import evaluate, fold_rows
    from sparkforge.models import build_model, save_weights
    from sparkforge.train.loader import ShardedLoader, read_split, trim_padding
    from sparkforge.train.loop import finish_rank, setup_rank

    rank, world, device, _ = setup_rank(params)
    seed = int(params["seed"])
    torch.manual_seed(seed)
    inputs: list[str] = params["inputs"]
    target: str = params["target"]
    regression = bool(params["regression"])

    data = read_split(Path(params["soft_labels"]), [*inputs, target, TEACHER_COLUMN])
    loader = ShardedLoader(data, rank, world, int(params["batch_size"]), seed)
    val = ({} if rank != 0 else
           read_split(Path(params["val_dir"]), [*inputs, target]) if params.get("val_fold") is None
           else fold_rows(Path(params["val_dir"]), [*inputs, target], int(params["val_fold"])))
    model = build_model(params["student_spec"]).to(device)
    ddp: torch.nn.Module = DDP(model) if world > 1 else model
    opt = torch.optim.AdamW(model.parameters(), lr=float(params["lr"]), weight_decay=0.01)
    epochs, steps = int(params["epochs"]), len(loader)
    total, warm = max(1, steps * epochs), int(0.06 * steps * epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warm) if s < warm
        else max(0.0, 1.0 - (s - warm) / max(1, total - warm)))
    out = Path(params["out_path"])
    best, bad, history = -math.inf, 0, []
    t_start = time.time()
    for epoch in range(epochs):
        ddp.train()
        t0, loss_sum, seen = time.time(), 0.0, 0
        for raw in loader.epoch(epoch):
            b = trim_padding(raw)
            xs = [torch.from_numpy(np.ascontiguousarray(b[k])).to(device) for k in inputs]
            y = torch.from_numpy(b[target]).to(device)
            teacher = torch.from_numpy(b[TEACHER_COLUMN]).to(device)
            loss = _kd_loss(ddp(*xs), teacher, y, regression=regression,
                            alpha=float(params["alpha"]),
                            temperature=float(params["temperature"]),
                            class_weights=params.get("class_weights"))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(y)
            seen += len(y)
        stats = torch.tensor([loss_sum, float(seen)], dtype=torch.float64)
        if world > 1:
            dist.all_reduce(stats)
        stop = False
        if rank == 0:
            metric = evaluate(model, val, inputs, target, regression) if len(val[target]) \
                else -float(stats[0] / max(float(stats[1]), 1.0))
            record = {"epoch": epoch, "train_loss": float(stats[0] / max(float(stats[1]), 1.0)),
                      "val_metric": metric, "epoch_s": time.time() - t0,
                      "elapsed_s": time.time() - t_start}
            history.append(record)
            print(f"[sparkforge] distill epoch {epoch}: train_loss={record['train_loss']:.4f} "
                  f"val_metric={metric:.4f} elapsed={record['elapsed_s']:.1f}s", flush=True)
            if metric > best:
                best, bad = metric, 0
                save_weights(model, out.with_name(out.name + ".tmp"))
                out.with_name(out.name + ".tmp").replace(out)
            else:
                bad += 1
            stop = bad >= int(params["patience"])
        if world > 1:
            flag = torch.tensor([1 if stop else 0])
            dist.broadcast(flag, src=0)
            stop = bool(flag.item())
        if stop:
            break
    return finish_rank({"history": history, "best_val_metric": best,
                        "val_rows": len(val[target]) if rank == 0 else None}, world)
