"""Classification metrics from per-partition partial aggregates.

Nothing row-level reaches the driver. :func:`classification_metrics` runs:

1. one ``mapInPandas`` pass that returns, per partition, the confusion counts,
   per-class true counts, the log-loss sum and validation counters; the driver
   adds them up (a bounded ``K x K`` aggregate per partition);
2. when ROC AUC is defined, an exact, rank-based, tie-aware AUC
   (see :func:`_roc_auc`): scores are cut into contiguous score *buckets* whose
   boundaries are approximate quantiles; positives/negatives are counted per
   distinct score in Spark, each bucket is scanned in score order inside one
   partition, and each bucket returns ``(positives, negatives, within-bucket
   Mann-Whitney sum)``. The driver combines at most ``classes x buckets`` such
   triples: negatives in earlier buckets all score strictly lower, so the
   cross-bucket pairs follow from the bucket totals.

   Offsets are keyed by bucket (a pure function of the score), not by partition
   id, so the result does not depend on how Spark happens to partition or sample
   the data between two jobs (a range partitioner's bounds can differ from one
   job to the next when its input order is not deterministic).

The results match scikit-learn 1.9.1 (see the docstring of
:func:`classification_metrics` for the exact correspondence and edge cases).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import Column, DataFrame

log = logging.getLogger(__name__)

# Probabilities are clipped to [eps, 1 - eps] before the log, as sklearn does for float64.
_EPS = float(np.finfo(np.float64).eps)
# sklearn warns when a probability row does not sum to 1 within this relative tolerance.
_SUM_RTOL = math.sqrt(_EPS)
# Score buckets per class for the exact AUC: bounds the rows the driver combines
# (classes x buckets) and the work one partition does for one bucket.
MAX_AUC_BUCKETS = 256
# slice_metrics refuses to loop over more distinct slice values than this.
MAX_SLICES = 100
# How many offending label values an error message quotes.
_MAX_EXAMPLES = 5

_PARTIAL_SCHEMA = (
    "n long, correct long, cm array<long>, true_counts array<long>, logloss double, "
    "bad_label long, bad_label_examples array<string>, bad_proba long, unnormalised long"
)
_EXPLODED_SCHEMA = "c int, b int, s double, pos long, neg long"
_BUCKET_SCHEMA = "c int, b int, pos long, neg long, u2 double"


def _check_inputs(df: DataFrame, labels: Sequence[str], label_col: str,
                  prediction_col: str, probability_col: str) -> list[str]:
    """Validate arguments and schema on the driver, before any Spark job runs."""
    from pyspark.sql.types import ArrayType, NumericType

    if isinstance(labels, str):
        raise TypeError(f"labels must be a sequence of class names, not the string {labels!r}: "
                        f"pass e.g. labels=[{labels!r}, ...]")
    names = [str(x) for x in labels]
    if len(names) < 2:
        raise ValueError(f"labels needs at least two classes, got {names}")
    if len(set(names)) != len(names):
        dupes = sorted({x for x in names if names.count(x) > 1})
        raise ValueError(f"labels must be unique; repeated: {dupes}")
    missing = [c for c in (label_col, prediction_col, probability_col) if c not in df.columns]
    if missing:
        raise ValueError(f"column(s) {missing} not in the DataFrame (columns: {df.columns}); "
                         "pass label_col=, prediction_col=, probability_col= to name them")
    ptype = df.schema[probability_col].dataType
    if not (isinstance(ptype, ArrayType) and isinstance(ptype.elementType, NumericType)):
        hint = ""
        if type(ptype).__name__ == "VectorUDT":
            hint = (" It is an ML vector: convert it with "
                    "pyspark.ml.functions.vector_to_array(F.col(...)).")
        raise TypeError(f"column {probability_col!r} must be array<double> with one probability "
                        f"per label, got {ptype.simpleString()}.{hint}")
    return names


def _selected(df: DataFrame, label_col: str, prediction_col: str,
              probability_col: str) -> DataFrame:
    from pyspark.sql import functions as F

    return df.select(
        F.col(label_col).cast("string").alias("y"),
        F.col(prediction_col).cast("string").alias("pred"),
        F.col(probability_col).cast("array<double>").alias("p"),
    )


def _proba_matrix(p: pd.Series, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(valid mask, probabilities of the valid rows as an (m, k) float64 matrix)."""
    lens = np.fromiter((-1 if a is None else len(a) for a in p), dtype=np.int64, count=len(p))
    valid = lens == k
    if not valid.any():
        return valid, np.empty((0, k), dtype=np.float64)
    mat = np.stack([np.asarray(a, dtype=np.float64) for a in p[valid]])
    ok = np.isfinite(mat).all(axis=1) & (mat >= 0.0).all(axis=1) & (mat <= 1.0).all(axis=1)
    idx = np.flatnonzero(valid)
    valid[idx[~ok]] = False
    return valid, mat[ok]


def _label_codes(values: pd.Series, labels: list[str]) -> np.ndarray:
    """Index of each value in ``labels``; -1 for null or values outside ``labels``."""
    import pandas as pd

    return np.asarray(pd.Categorical(values, categories=labels).codes, dtype=np.int64)


def _partials_fn(labels: list[str]) -> Any:
    """The mapInPandas function of pass 1: one small row of partial sums per partition."""
    k = len(labels)

    def partials(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        n = correct = bad_label = bad_proba = unnormalised = 0
        cm = np.zeros(k * k, dtype=np.int64)
        true_counts = np.zeros(k, dtype=np.int64)
        logloss: list[float] = []
        examples: set[str] = set()
        for pdf in batches:
            if pdf.empty:
                continue
            n += len(pdf)
            yc = _label_codes(pdf["y"], labels)
            pc = _label_codes(pdf["pred"], labels)
            valid, proba = _proba_matrix(pdf["p"], k)
            label_ok = yc >= 0
            bad_label += int((~label_ok).sum())
            bad_proba += int((~valid).sum())
            if len(examples) < _MAX_EXAMPLES:
                for v in pdf["y"][~label_ok].head(_MAX_EXAMPLES):
                    examples.add("<null>" if v is None else str(v))
            good = label_ok & valid
            keep = good[valid]  # rows of `proba` whose label is known
            y = yc[good]
            pred = pc[good]
            proba = proba[keep]
            correct += int((y == pred).sum())
            true_counts += np.bincount(y, minlength=k)
            in_labels = pred >= 0
            cm += np.bincount(y[in_labels] * k + pred[in_labels], minlength=k * k)
            p_true = np.clip(proba[np.arange(len(y)), y], _EPS, 1.0 - _EPS)
            logloss.append(float(-np.log(p_true).sum()))
            unnormalised += int((np.abs(proba.sum(axis=1) - 1.0) > _SUM_RTOL).sum())
        if n:
            yield pd.DataFrame({
                "n": [n], "correct": [correct], "cm": [cm.tolist()],
                "true_counts": [true_counts.tolist()], "logloss": [math.fsum(logloss)],
                "bad_label": [bad_label], "bad_label_examples": [sorted(examples)[:_MAX_EXAMPLES]],
                "bad_proba": [bad_proba], "unnormalised": [unnormalised],
            })

    return partials


def _exploded_fn(labels: list[str], tasks: list[int], bounds: list[np.ndarray]) -> Any:
    """mapInPandas function: one (class, bucket, score, pos, neg) row per row and task."""
    k = len(labels)

    def explode(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        for pdf in batches:
            if pdf.empty:
                continue
            yc = _label_codes(pdf["y"], labels)
            _, proba = _proba_matrix(pdf["p"], k)  # validated by pass 1: all rows valid
            for task, cls in enumerate(tasks):
                s = proba[:, cls]
                pos = (yc == cls).astype(np.int64)
                yield pd.DataFrame({
                    "c": np.full(len(s), task, dtype=np.int32),
                    "b": np.searchsorted(bounds[task], s, side="right").astype(np.int32),
                    "s": s, "pos": pos, "neg": 1 - pos,
                })

    return explode


def _scan_buckets(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Per (class, bucket): positives, negatives and twice the within-bucket U statistic.

    Input: one row per distinct (class, score) with its positive/negative counts,
    sorted by (class, bucket, score), each (class, bucket) entirely in this partition.
    A bucket may span several Arrow batches: the running negative count carries over.
    ``u2 = sum over positives of (2 * negatives scoring lower + negatives tied)``.
    """
    import pandas as pd

    acc: dict[tuple[int, int], list[float]] = {}
    for pdf in batches:
        if pdf.empty:
            continue
        for (c, b), g in pdf.groupby(["c", "b"], sort=False):
            st = acc.setdefault((int(c), int(b)), [0.0, 0.0, 0.0])
            pos = g["pos"].to_numpy(dtype=np.float64)
            neg = g["neg"].to_numpy(dtype=np.float64)
            below = st[1] + np.cumsum(neg) - neg
            st[2] += float(np.dot(pos, 2.0 * below + neg))
            st[0] += float(pos.sum())
            st[1] += float(neg.sum())
    if acc:
        keys = sorted(acc)
        yield pd.DataFrame({
            "c": [c for c, _ in keys], "b": [b for _, b in keys],
            "pos": [int(acc[key][0]) for key in keys], "neg": [int(acc[key][1]) for key in keys],
            "u2": [acc[key][2] for key in keys],
        })


def _n_buckets(df: DataFrame) -> int:
    shuffle = int(df.sparkSession.conf.get("spark.sql.shuffle.partitions") or "200")
    return max(2, min(MAX_AUC_BUCKETS, 4 * shuffle))


def _roc_auc(sel: DataFrame, labels: list[str]) -> float:
    """Exact ROC AUC (binary, or one-vs-rest macro) with ties counted half.

    Callers make sure every label occurs, so each task has positives and negatives.
    """
    from pyspark.sql import functions as F

    k = len(labels)
    tasks = [1] if k == 2 else list(range(k))
    n_buckets = _n_buckets(sel)
    qcols = [f"_s{c}" for c in tasks]
    probs = [i / n_buckets for i in range(1, n_buckets)]
    quantiles = sel.select(*[F.col("p")[c].alias(name) for c, name in zip(tasks, qcols,
                                                                        strict=True)]
                           ).approxQuantile(qcols, probs, 0.25 / n_buckets)
    bounds = [np.unique(np.asarray(q, dtype=np.float64)) for q in quantiles]
    log.debug("AUC score buckets per class: %s", [len(b) + 1 for b in bounds])

    exploded = sel.mapInPandas(_exploded_fn(labels, tasks, bounds), _EXPLODED_SCHEMA)
    per_score = exploded.groupBy("c", "b", "s").agg(F.sum("pos").alias("pos"),
                                                     F.sum("neg").alias("neg"))
    per_bucket = (per_score.repartition("c", "b").sortWithinPartitions("c", "b", "s")
                  .mapInPandas(_scan_buckets, _BUCKET_SCHEMA))
    # At most len(tasks) * n_buckets rows: each (class, bucket) lives in one partition.
    rows = sorted((r["c"], r["b"], r["pos"], r["neg"], r["u2"]) for r in per_bucket.collect())

    aucs = []
    for task in range(len(tasks)):
        n_pos = n_neg = 0
        u2 = 0.0
        for c, _b, pos, neg, u2_b in rows:
            if c != task:
                continue
            u2 += u2_b + 2.0 * pos * n_neg  # every negative of an earlier bucket scores lower
            n_pos += pos
            n_neg += neg
        aucs.append(u2 / (2.0 * n_pos * n_neg))
    return float(np.mean(aucs))


def _prf(cm: np.ndarray, true_counts: np.ndarray) -> tuple[float, float, float]:
    """Macro precision, recall, F1 over all labels, sklearn's zero_division=0."""
    tp = np.diag(cm).astype(np.float64)
    pred_counts = cm.sum(axis=0).astype(np.float64)
    true_f = true_counts.astype(np.float64)

    def div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        out = np.zeros_like(num)
        np.divide(num, den, out=out, where=den > 0)
        return out

    precision = div(tp, pred_counts)
    recall = div(tp, true_f)
    f1 = div(2.0 * tp, true_f + pred_counts)
    return float(precision.mean()), float(recall.mean()), float(f1.mean())


def classification_metrics(df: DataFrame, labels: Sequence[str], *, label_col: str = "label",
                           prediction_col: str = "prediction",
                           probability_col: str = "probability") -> dict[str, Any]:
    """Accuracy, macro P/R/F1, log loss, ROC AUC and confusion matrix of a scored DataFrame.

    ``label_col`` and ``prediction_col`` hold class names (cast to string; every
    true label must be in ``labels``, a prediction outside them is simply wrong);
    ``probability_col`` is ``array<double>`` with one probability per class **in
    the order of** ``labels``.

    Returns a JSON-serialisable dict, equal (to rounding) to scikit-learn 1.9.1 on
    the same rows:

    - ``n_rows``; ``accuracy`` = ``accuracy_score``;
    - ``precision_macro``, ``recall_macro``, ``f1_macro`` = ``precision_score`` etc.
      with ``labels=labels, average="macro", zero_division=0`` (labels never seen
      count as 0 in the mean);
    - ``log_loss`` = ``log_loss(y_true, proba, labels=labels)``: probabilities are
      clipped to ``[eps, 1 - eps]`` and not renormalised (a warning is logged for
      rows that do not sum to 1). sklearn takes probability columns in *sorted*
      label order; here they follow ``labels``, so the two agree when ``labels``
      is sorted (otherwise compare with the columns permuted to sorted order);
    - ``roc_auc``: two labels: ``roc_auc_score(y_true == labels[1], proba[:, 1])``;
      more: ``roc_auc_score(y_true, proba, multi_class="ovr", average="macro",
      labels=labels)``. ``None`` whenever a label in ``labels`` never occurs as a
      true label: that is exactly when sklearn returns NaN (with an
      ``UndefinedMetricWarning``) for the binary case and for one-vs-rest macro;
    - ``confusion_matrix`` = ``confusion_matrix(labels=labels).tolist()`` (rows
      true, columns predicted); ``labels``.

    Raises ``ValueError`` on an empty DataFrame, a true label outside ``labels``
    (or null), or a probability row that is null, has the wrong length or holds
    values outside [0, 1].
    """
    names = _check_inputs(df, labels, label_col, prediction_col, probability_col)
    k = len(names)
    sel = _selected(df, label_col, prediction_col, probability_col)
    log.info("Classification metrics over %d labels (label=%s, prediction=%s, probability=%s)",
             k, label_col, prediction_col, probability_col)

    parts = sel.mapInPandas(_partials_fn(names), _PARTIAL_SCHEMA).collect()
    n = sum(int(r["n"]) for r in parts)
    if n == 0:
        raise ValueError("classification_metrics got an empty DataFrame: no rows to evaluate")
    bad_label = sum(int(r["bad_label"]) for r in parts)
    if bad_label:
        examples = sorted({e for r in parts for e in r["bad_label_examples"]})[:_MAX_EXAMPLES]
        raise ValueError(f"{bad_label} row(s) of {label_col!r} are null or not in labels={names} "
                         f"(e.g. {examples}); add the missing classes to labels or filter "
                         "those rows out")
    bad_proba = sum(int(r["bad_proba"]) for r in parts)
    if bad_proba:
        raise ValueError(f"{bad_proba} row(s) of {probability_col!r} are null, do not have "
                         f"{k} entries (one per label) or hold values outside [0, 1]")
    unnormalised = sum(int(r["unnormalised"]) for r in parts)
    if unnormalised:
        log.warning("%d probability row(s) do not sum to 1; log loss uses them as they are",
                    unnormalised)

    cm = np.sum([np.asarray(r["cm"], dtype=np.int64) for r in parts], axis=0).reshape(k, k)
    true_counts = np.sum([np.asarray(r["true_counts"], dtype=np.int64) for r in parts], axis=0)
    precision, recall, f1 = _prf(cm, true_counts)

    absent = [names[i] for i in range(k) if true_counts[i] == 0]
    roc_auc: float | None
    if absent:
        log.info("ROC AUC undefined: label(s) %s never occur in %r", absent, label_col)
        roc_auc = None
    else:
        roc_auc = _roc_auc(sel, names)

    result: dict[str, Any] = {
        "n_rows": n,
        "accuracy": sum(int(r["correct"]) for r in parts) / n,
        "precision_macro": precision,
        "recall_macro": recall,
        "f1_macro": f1,
        "log_loss": math.fsum(float(r["logloss"]) for r in parts) / n,
        "roc_auc": roc_auc,
        "confusion_matrix": cm.tolist(),
        "labels": names,
    }
    log.info("Classification metrics on %d rows: accuracy=%.4f f1_macro=%.4f roc_auc=%s",
             n, result["accuracy"], f1, roc_auc)
    return result


def _slice_key(value: object) -> str:
    return "null" if value is None else str(value)


def slice_metrics(df: DataFrame, labels: Sequence[str], slice_col: str,
                  **kw: str) -> dict[str, dict[str, Any]]:
    """:func:`classification_metrics` per distinct value of ``slice_col``.

    Keys are ``str(value)`` (``"null"`` for null), in sorted order. ``kw`` goes to
    :func:`classification_metrics` (``label_col``, ``prediction_col``,
    ``probability_col``). A slice where some label never occurs gets
    ``roc_auc=None``. At most :data:`MAX_SLICES` distinct values; ``df`` is cached
    for the loop unless it already is.
    """
    from pyspark.sql import functions as F

    if slice_col not in df.columns:
        raise ValueError(f"slice column {slice_col!r} not in the DataFrame (columns: {df.columns})")
    _check_inputs(df, labels, kw.get("label_col", "label"),
                  kw.get("prediction_col", "prediction"),
                  kw.get("probability_col", "probability"))
    level = df.storageLevel
    cache = not (level.useMemory or level.useDisk or level.useOffHeap)
    if cache:
        df = df.persist()
    try:
        values = [r[0] for r in df.select(slice_col).distinct().limit(MAX_SLICES + 1).collect()]
        if len(values) > MAX_SLICES:
            raise ValueError(f"{slice_col!r} has more than {MAX_SLICES} distinct values; "
                             "slice on a coarser column (e.g. bucket it first)")
        log.info("Slice metrics over %d value(s) of %r", len(values), slice_col)
        out: dict[str, dict[str, Any]] = {}
        for value in sorted(values, key=_slice_key):
            cond: Column = (F.col(slice_col).isNull() if value is None
                            else F.col(slice_col) == F.lit(value))
            out[_slice_key(value)] = classification_metrics(df.where(cond), labels, **kw)
        return out
    finally:
        if cache:
            df.unpersist()
