"""sparkforge.metrics against scikit-learn on the same rows (to 1e-9)."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from sparkforge.metrics import classification_metrics, regression_metrics, slice_metrics

TOL = 1e-9
SCHEMA = "id long, label string, prediction string, probability array<double>"
KEYS = {"n_rows", "accuracy", "precision_macro", "recall_macro", "f1_macro", "log_loss",
        "roc_auc", "confusion_matrix", "labels"}


def _frame(rng: np.random.Generator, labels: Sequence[str], n: int, *,
           ticks: int | None = None, wrong: float = 0.2) -> pd.DataFrame:
    """Scored rows: y drawn from the probabilities; ``ticks`` makes them multiples of 1/ticks."""
    k = len(labels)
    if ticks is None:
        proba = rng.dirichlet(np.full(k, 0.7), size=n)
    else:  # few distinct values, many ties, rows still sum to 1
        proba = rng.multinomial(ticks, rng.dirichlet(np.full(k, 0.7), size=n)) / ticks
    y = np.array([rng.choice(k, p=p) for p in proba])
    pred = np.where(rng.random(n) < wrong, rng.integers(0, k, n), proba.argmax(axis=1))
    names = np.asarray(labels, dtype=object)
    return pd.DataFrame({"id": np.arange(n), "label": names[y], "prediction": names[pred],
                         "probability": list(proba)})


def _expected(pdf: pd.DataFrame, labels: Sequence[str]) -> dict[str, Any]:
    """The same metrics from scikit-learn (sklearn wants proba columns in sorted label order)."""
    labels = list(labels)
    y = pdf["label"].to_numpy()
    pred = pdf["prediction"].to_numpy()
    proba = np.stack(pdf["probability"].to_numpy())
    order = np.argsort(labels)
    sorted_labels = [labels[i] for i in order]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # UndefinedMetricWarning for absent classes
        prf = {name: fn(y, pred, labels=labels, average="macro", zero_division=0)
               for name, fn in (("precision_macro", skm.precision_score),
                                ("recall_macro", skm.recall_score),
                                ("f1_macro", skm.f1_score))}
        if len(labels) == 2:
            auc = skm.roc_auc_score(y == labels[1], proba[:, 1])
        else:
            auc = skm.roc_auc_score(y, proba[:, order], multi_class="ovr", average="macro",
                                    labels=sorted_labels)
    return {
        "n_rows": len(pdf),
        "accuracy": skm.accuracy_score(y, pred),
        **prf,
        "log_loss": skm.log_loss(y, proba[:, order], labels=sorted_labels),
        "roc_auc": None if math.isnan(auc) else auc,
        "confusion_matrix": skm.confusion_matrix(y, pred, labels=labels).tolist(),
        "labels": labels,
    }


def _assert_matches(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert set(got) == KEYS
    json.dumps(got)  # JSON-serialisable as returned
    for key in ("n_rows", "confusion_matrix", "labels"):
        assert got[key] == want[key], key
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "log_loss"):
        assert got[key] == pytest.approx(want[key], rel=TOL, abs=TOL), key
    if want["roc_auc"] is None:
        assert got["roc_auc"] is None
    else:
        assert got["roc_auc"] == pytest.approx(want["roc_auc"], rel=TOL, abs=TOL)


@pytest.fixture
def small_batches(spark: Any) -> Iterator[None]:
    """Tiny Arrow batches, so partitions (and AUC score buckets) span several batches."""
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    old = spark.conf.get(key)
    spark.conf.set(key, "50")
    yield
    spark.conf.set(key, old)


def test_binary_with_ties_matches_sklearn(spark: Any) -> None:
    labels = ["neg", "pos"]
    pdf = _frame(np.random.default_rng(1), labels, 3000, ticks=10)  # 11 distinct scores
    got = classification_metrics(spark.createDataFrame(pdf, SCHEMA), labels)
    want = _expected(pdf, labels)
    assert 0.5 < want["roc_auc"] < 1.0
    _assert_matches(got, want)


def test_multiclass_matches_sklearn(spark: Any) -> None:
    labels = ["a", "b", "c", "d", "e"]
    pdf = _frame(np.random.default_rng(2), labels, 3000, ticks=20)
    got = classification_metrics(spark.createDataFrame(pdf, SCHEMA), labels)
    _assert_matches(got, _expected(pdf, labels))


def test_unsorted_labels_follow_labels_order(spark: Any) -> None:
    # Probability columns follow `labels`; sklearn is given them permuted to sorted order.
    labels = ["e", "a", "c", "b", "d"]
    pdf = _frame(np.random.default_rng(3), labels, 1500)
    got = classification_metrics(spark.createDataFrame(pdf, SCHEMA), labels)
    _assert_matches(got, _expected(pdf, labels))

    binary = ["yes", "no"]  # positive class is labels[1] = "no"
    pdf2 = _frame(np.random.default_rng(4), binary, 1500, ticks=10)
    got2 = classification_metrics(spark.createDataFrame(pdf2, SCHEMA), binary)
    _assert_matches(got2, _expected(pdf2, binary))


def test_class_absent_from_y_true_gives_no_auc(spark: Any) -> None:
    labels = ["a", "b", "c", "d"]
    rng = np.random.default_rng(5)
    pdf = _frame(rng, labels, 2000, ticks=10)
    pdf = pdf[pdf["label"] != "d"].reset_index(drop=True)  # "d" only ever predicted
    pdf.loc[rng.random(len(pdf)) < 0.05, "prediction"] = "zzz"  # outside labels: just wrong
    want = _expected(pdf, labels)
    assert want["roc_auc"] is None  # sklearn: NaN + UndefinedMetricWarning
    got = classification_metrics(spark.createDataFrame(pdf, SCHEMA), labels)
    _assert_matches(got, want)
    assert got["confusion_matrix"][3] == [0, 0, 0, 0]


def test_many_partitions_an_empty_one_and_small_batches(spark: Any, small_batches: None
                                                        ) -> None:
    from pyspark.sql import functions as F

    labels = ["a", "b", "c"]
    pdf = _frame(np.random.default_rng(6), labels, 3000)  # continuous scores: many buckets
    sdf = (spark.createDataFrame(pdf, SCHEMA).repartition(7, "id")
           .where(F.spark_partition_id() != 3))
    sizes = sdf.rdd.glom().map(len).collect()
    assert len(sizes) == 7
    assert 0 in sizes
    rows = sdf.toPandas()  # the same rows, for sklearn
    got = classification_metrics(sdf, labels)
    _assert_matches(got, _expected(rows, labels))


def test_slice_metrics_per_value(spark: Any) -> None:
    labels = ["neg", "pos"]
    rng = np.random.default_rng(7)
    pdf = _frame(rng, labels, 2400, ticks=10)
    pdf["segment"] = np.where(rng.random(len(pdf)) < 0.5, "s0", "s1")
    only_neg = (pdf["label"] == "neg") & (rng.random(len(pdf)) < 0.2)
    pdf.loc[only_neg, "segment"] = "single"
    sdf = spark.createDataFrame(pdf, SCHEMA + ", segment string")
    got = slice_metrics(sdf, labels, "segment")
    assert list(got) == ["s0", "s1", "single"]
    for key, metrics in got.items():
        _assert_matches(metrics, _expected(pdf[pdf["segment"] == key], labels))
    assert got["single"]["roc_auc"] is None
    assert got["single"]["n_rows"] == int(only_neg.sum())


def test_invalid_inputs_raise_helpful_errors(spark: Any) -> None:
    labels = ["neg", "pos"]
    pdf = _frame(np.random.default_rng(8), labels, 50)
    sdf = spark.createDataFrame(pdf, SCHEMA)
    with pytest.raises(ValueError, match="not in labels"):
        classification_metrics(sdf, ["neg", "maybe"])
    with pytest.raises(ValueError, match="at least two"):
        classification_metrics(sdf, ["neg"])
    with pytest.raises(ValueError, match="3 entries"):
        classification_metrics(sdf, ["neg", "pos", "other"])
    with pytest.raises(ValueError, match="empty"):
        classification_metrics(sdf.limit(0), labels)
    with pytest.raises(ValueError, match="not in the DataFrame"):
        classification_metrics(sdf, labels, probability_col="proba")


def _regression_frame(rng: np.random.Generator, n: int, offset: float) -> pd.DataFrame:
    y = offset + rng.normal(0.0, 1.0, n)
    return pd.DataFrame({"label": y, "prediction": y + rng.normal(0.0, 0.5, n)})


def test_regression_large_offset_matches_sklearn(spark: Any) -> None:
    pdf = _regression_frame(np.random.default_rng(9), 4000, 1e8)
    y, yhat = pdf["label"].to_numpy(), pdf["prediction"].to_numpy()
    # The naive one-pass variance cancels catastrophically at this offset.
    naive = float(np.sum(y * y) - len(y) * np.mean(y) ** 2)
    exact = float(np.sum((y - y.mean()) ** 2))
    assert abs(naive - exact) > 0.01 * exact
    got = regression_metrics(spark.createDataFrame(pdf).repartition(7))
    json.dumps(got)
    assert set(got) == {"n_rows", "rmse", "mae", "r2"}
    assert got["n_rows"] == len(pdf)
    assert got["rmse"] == pytest.approx(skm.root_mean_squared_error(y, yhat), rel=TOL)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, yhat), rel=TOL)
    assert got["r2"] == pytest.approx(skm.r2_score(y, yhat), rel=TOL, abs=TOL)


def test_regression_edge_cases(spark: Any) -> None:
    const = pd.DataFrame({"y": [5.0] * 6, "p": [5.0, 5.0, 4.0, 6.0, 5.0, 5.5]})
    got = regression_metrics(spark.createDataFrame(const), label_col="y", prediction_col="p")
    assert got["r2"] == skm.r2_score(const["y"], const["p"]) == 0.0
    perfect = regression_metrics(spark.createDataFrame(const.assign(p=5.0)), label_col="y",
                                 prediction_col="p")
    assert perfect["r2"] == 1.0
    assert perfect["rmse"] == 0.0
    one = regression_metrics(spark.createDataFrame(const.head(1)), label_col="y",
                             prediction_col="p")
    assert one["r2"] is None  # sklearn: NaN with fewer than two samples
    with pytest.raises(ValueError, match="null, NaN"):
        regression_metrics(spark.createDataFrame(const.assign(p=[1.0, None, 2, 3, 4, 5])),
                           label_col="y", prediction_col="p")
