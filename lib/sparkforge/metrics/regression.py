"""Regression metrics from numerically stable per-partition partial aggregates.

One ``mapInPandas`` pass returns, per partition, the count, mean and sum of
squared deviations (M2) of the label, its min/max, and the sums of squared and
absolute residuals. The driver merges the (count, mean, M2) triples with Chan et
al.'s pairwise formula, so a large constant offset in the label (e.g. 1e9 + noise)
does not cancel the variance away as ``sum(y**2) - n * mean**2`` would.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

_PARTIAL_SCHEMA = ("n long, mean double, m2 double, ymin double, ymax double, "
                   "sse double, sae double, bad long")


def _merge(a: tuple[int, float, float], b: tuple[int, float, float]
           ) -> tuple[int, float, float]:
    """Chan et al.: combine (count, mean, M2) of two disjoint sets of values."""
    na, ma, m2a = a
    nb, mb, m2b = b
    if na == 0:
        return b
    if nb == 0:
        return a
    n = na + nb
    delta = mb - ma
    return n, ma + delta * nb / n, m2a + m2b + delta * delta * na * nb / n


def _partials(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    import pandas as pd

    stats: tuple[int, float, float] = (0, 0.0, 0.0)
    ymin, ymax = math.inf, -math.inf
    sse: list[float] = []
    sae: list[float] = []
    bad = 0
    for pdf in batches:
        if pdf.empty:
            continue
        y = pdf["y"].to_numpy(dtype=np.float64, na_value=np.nan)
        yhat = pdf["yhat"].to_numpy(dtype=np.float64, na_value=np.nan)
        ok = np.isfinite(y) & np.isfinite(yhat)
        bad += int((~ok).sum())
        y, yhat = y[ok], yhat[ok]
        if not len(y):
            continue
        mean = float(y.mean())
        stats = _merge(stats, (len(y), mean, float(np.square(y - mean).sum())))
        ymin, ymax = min(ymin, float(y.min())), max(ymax, float(y.max()))
        resid = y - yhat
        sse.append(float(np.square(resid).sum()))
        sae.append(float(np.abs(resid).sum()))
    if stats[0] or bad:
        yield pd.DataFrame({"n": [stats[0]], "mean": [stats[1]], "m2": [stats[2]],
                            "ymin": [ymin], "ymax": [ymax], "sse": [math.fsum(sse)],
                            "sae": [math.fsum(sae)], "bad": [bad]})


def regression_metrics(df: DataFrame, *, label_col: str = "label",
                       prediction_col: str = "prediction") -> dict[str, Any]:
    """RMSE, MAE and R² of a scored DataFrame, without collecting its rows.

    Equal (to rounding) to scikit-learn's ``root_mean_squared_error``,
    ``mean_absolute_error`` and ``r2_score`` on the same rows. ``r2`` follows
    sklearn's ``force_finite`` rule: a constant label (checked exactly, with its
    min and max) gives 1.0 for perfect predictions and 0.0 otherwise; ``r2`` is
    ``None`` for fewer than two rows (sklearn returns NaN).

    Raises ``ValueError`` on an empty DataFrame or a null/NaN/infinite value.
    """
    from pyspark.sql import functions as F

    missing = [c for c in (label_col, prediction_col) if c not in df.columns]
    if missing:
        raise ValueError(f"column(s) {missing} not in the DataFrame (columns: {df.columns}); "
                         "pass label_col= and prediction_col= to name them")
    log.info("Regression metrics (label=%s, prediction=%s)", label_col, prediction_col)
    sel = df.select(F.col(label_col).cast("double").alias("y"),
                    F.col(prediction_col).cast("double").alias("yhat"))
    parts = sel.mapInPandas(_partials, _PARTIAL_SCHEMA).collect()

    bad = sum(int(r["bad"]) for r in parts)
    if bad:
        raise ValueError(f"{bad} row(s) have a null, NaN or infinite {label_col!r} or "
                         f"{prediction_col!r}; fill or filter them before evaluating")
    stats: tuple[int, float, float] = (0, 0.0, 0.0)
    for r in parts:
        stats = _merge(stats, (int(r["n"]), float(r["mean"]), float(r["m2"])))
    n, _, m2 = stats
    if n == 0:
        raise ValueError("regression_metrics got an empty DataFrame: no rows to evaluate")
    sse = math.fsum(float(r["sse"]) for r in parts)
    sae = math.fsum(float(r["sae"]) for r in parts)
    constant = min(float(r["ymin"]) for r in parts) == max(float(r["ymax"]) for r in parts)

    r2: float | None
    if n < 2:
        r2 = None
    elif sse == 0.0:
        r2 = 1.0
    elif constant or m2 == 0.0:
        r2 = 0.0
    else:
        r2 = 1.0 - sse / m2
    result: dict[str, Any] = {"n_rows": n, "rmse": math.sqrt(sse / n), "mae": sae / n, "r2": r2}
    log.info("Regression metrics on %d rows: rmse=%.6g mae=%.6g r2=%s", n, result["rmse"],
             result["mae"], r2)
    return result
