"""ROC, precision-recall and calibration curves from binned score counts.

Scores are bucketed in Spark into ``bins`` equal-width bins and only the per-bin
counts reach the driver (at most ``bins + 1`` rows), so curves cost one aggregation
whatever the table size. The exact AUC lives in ``classification_metrics``; these
curves are for plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def binned_curves(df: DataFrame, labels: Sequence[str], bins: int = 100,
                  calibration_bins: int = 10) -> dict[str, Any]:
    from pyspark.sql import functions as F

    binary = len(labels) == 2
    if binary:  # score = probability of the positive class (the second label)
        score = F.col("probability")[1]
        hit = (F.col("label") == F.lit(labels[1])).cast("long")
    else:       # multiclass: confidence of the predicted class, and whether it was right
        score = F.array_max(F.col("probability"))
        hit = (F.col("label") == F.col("prediction")).cast("long")
    b = F.least(F.floor(score * bins).cast("int"), F.lit(bins - 1))
    rows = (df.select(b.alias("b"), hit.alias("hit"), score.alias("s"))
            .groupBy("b").agg(F.count(F.lit(1)).alias("n"), F.sum("hit").alias("pos"),
                              F.sum("s").alias("s")).collect())
    n = [0] * bins
    pos = [0] * bins
    ssum = [0.0] * bins
    for r in rows:
        n[r["b"]], pos[r["b"]], ssum[r["b"]] = int(r["n"]), int(r["pos"]), float(r["s"])
    out: dict[str, Any] = {"kind": "binary" if binary else "confidence", "bins": bins}
    # Calibration: mean score vs observed rate, in coarser bins.
    step = bins // calibration_bins
    cal = []
    for i in range(0, bins, step):
        cn = sum(n[i:i + step])
        if cn:
            cal.append({"mean_score": sum(ssum[i:i + step]) / cn,
                        "observed": sum(pos[i:i + step]) / cn, "n": cn})
    out["calibration"] = cal
    if binary:
        total_pos, total_neg = sum(pos), sum(n) - sum(pos)
        tp = fp = 0
        roc, pr = [{"fpr": 0.0, "tpr": 0.0}], []
        for i in reversed(range(bins)):  # threshold sweeps from high scores down
            tp += pos[i]
            fp += n[i] - pos[i]
            tpr = tp / total_pos if total_pos else 0.0
            roc.append({"fpr": fp / total_neg if total_neg else 0.0, "tpr": tpr})
            if tp + fp:
                pr.append({"recall": tpr, "precision": tp / (tp + fp)})
        out["roc"], out["pr"] = roc, pr
    return out
