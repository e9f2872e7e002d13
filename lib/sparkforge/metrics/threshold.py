"""The binary decision threshold (``evaluate.threshold``): chosen on validation fold 0,
applied by scoring.

Choosing: the positive class's probability (the second label's) of the scored rows is
bucketed on a grid of ``GRID`` steps and positives / negatives are counted per bucket in
Spark; the few thousand bucket counts (never rows) come to the driver, where cumulative
sums give each candidate threshold ``b / GRID``'s confusion matrix exactly: a row is
predicted positive when its probability is at least the threshold, which is the bucket
test ``floor(p * GRID) >= b``. The candidate with the best metric wins; ties go to the
threshold nearest 0.5 (the accuracy-oriented default).

Applying: :func:`decide` (numpy) is what ``infer.score_df`` uses per batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

GRID = 10_000  # candidate thresholds 0, 1e-4, ..., 1
METRICS = ("f1", "balanced_accuracy")


def decide(p: np.ndarray, threshold: float | None) -> np.ndarray:
    """Predicted label indices from probabilities ``p`` (rows x classes): the argmax, or
    for two classes with a ``threshold``, 1 where ``p[:, 1] >= threshold``."""
    if threshold is None or p.shape[1] != 2:
        return np.asarray(p.argmax(axis=1))
    return (p[:, 1] >= threshold).astype(np.int64)


def bucket_counts(scored: DataFrame, positive: str) -> tuple[np.ndarray, np.ndarray]:
    """(positives, negatives) per probability bucket 0..GRID of labeled scored rows (a
    Spark aggregation; ``probability[1]`` is the positive class's)."""
    from pyspark.sql import functions as F

    b = F.least(F.floor(F.col("probability")[1] * GRID), F.lit(GRID)).cast("int")
    rows = (scored.filter(F.col("label").isNotNull())
            .groupBy(b.alias("b"))
            .agg(F.sum((F.col("label") == positive).cast("long")).alias("pos"),
                 F.count(F.lit(1)).alias("n"))
            .collect())
    pos, neg = np.zeros(GRID + 1, np.int64), np.zeros(GRID + 1, np.int64)
    for r in rows:
        pos[r["b"]] += int(r["pos"])
        neg[r["b"]] += int(r["n"]) - int(r["pos"])
    return pos, neg


def confusion_at(pos: np.ndarray, neg: np.ndarray) -> dict[str, np.ndarray]:
    """TP, FP, FN, TN for every candidate threshold b / GRID, b = 0..GRID."""
    tp = pos[::-1].cumsum()[::-1]  # positives with bucket >= b
    fp = neg[::-1].cumsum()[::-1]
    return {"tp": tp, "fp": fp, "fn": pos.sum() - tp, "tn": neg.sum() - fp}


def metric_curves(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    tp, fp, fn, tn = (c[k].astype(np.float64) for k in ("tp", "fp", "fn", "tn"))
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        tpr = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        tnr = np.where(tn + fp > 0, tn / (tn + fp), 0.0)
    n = tp + fp + fn + tn
    acc = np.where(n > 0, (tp + tn) / np.maximum(n, 1), 0.0)
    return {"f1": f1, "balanced_accuracy": (tpr + tnr) / 2, "accuracy": acc}


def _at(curves: dict[str, np.ndarray], b: int) -> dict[str, float]:
    return {k: float(v[b]) for k, v in curves.items()}


def choose_threshold(pos: np.ndarray, neg: np.ndarray, metric: str) -> tuple[float, int]:
    """(threshold, its bucket) maximising ``metric``; ties to the one nearest 0.5."""
    if metric not in METRICS:
        raise ValueError(f"threshold metric {metric!r}: use one of {METRICS}")
    values = metric_curves(confusion_at(pos, neg))[metric]
    b = np.arange(GRID + 1)
    best = values.max()
    ties = b[np.isclose(values, best, rtol=0, atol=1e-12)]
    pick = int(ties[np.argmin(np.abs(ties - GRID // 2))])
    return pick / GRID, pick


def threshold_record(select: DataFrame, judge: DataFrame | None, labels: list[str],
                     metric: str, variant: str, chosen_on: str, judged_on: str
                     ) -> dict[str, Any]:
    """Choose the threshold on ``select`` (scored fold-0 rows) and record the metric,
    accuracy and balanced accuracy at 0.5 and at the threshold on both ``select`` and
    ``judge`` (the gate's held-out fold 1, when it has rows)."""
    positive = labels[1]
    pos, neg = bucket_counts(select, positive)
    threshold, b = choose_threshold(pos, neg, metric)
    half = GRID // 2
    rec: dict[str, Any] = {"metric": metric, "value": threshold, "variant": variant,
                           "positive_label": positive, "chosen_on": chosen_on,
                           "rows": int(pos.sum() + neg.sum())}
    sel = metric_curves(confusion_at(pos, neg))
    rec["chosen_on_metrics"] = {"at_0.5": _at(sel, half), "at_threshold": _at(sel, b)}
    if judge is not None:
        jpos, jneg = bucket_counts(judge, positive)
        if jpos.sum() + jneg.sum():
            cur = metric_curves(confusion_at(jpos, jneg))
            rec["judged_on"] = judged_on
            rec["judged_on_metrics"] = {"at_0.5": _at(cur, half), "at_threshold": _at(cur, b)}
    return rec
