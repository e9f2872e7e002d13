"""Class imbalance end to end on a generated table with 5% positives: the default
``train.class_weights: auto`` weighs the loss (weights equal scikit-learn's "balanced"),
``evaluate.threshold: f1`` picks a threshold on validation fold 0 whose F1 scikit-learn
confirms on the same rows, and scoring's prediction column applies it.

One small pipeline run (8,000 rows, an MLP of width 16, at most 8 epochs on 1 rank, no
compressed variants and no baseline): about 1.5 minutes on 2 cores.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from _train_helpers import read_preprocessed
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_recall_curve
from sklearn.utils.class_weight import compute_class_weight

from sparkforge.artifacts import read_json
from sparkforge.config import load_config
from sparkforge.jobs import run_pipeline

ROOT = Path(__file__).resolve().parents[2]
N_ROWS, POSITIVE_SHARE = 8000, 0.05


def _write_table(path: Path) -> None:
    """Two informative features (positives shifted by 1.2 sd) and two noise features."""
    rng = np.random.default_rng(42)
    y = rng.random(N_ROWS) < POSITIVE_SHARE
    x = rng.normal(size=(N_ROWS, 4))
    x[:, :2] += 1.2 * y[:, None]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["a", "b", "c", "d", "label"])
        for row, lab in zip(x, y, strict=True):
            w.writerow([f"{v:.5f}" for v in row] + ["yes" if lab else "no"])


def _split(out: Path, split: str, columns: list[str]) -> dict[str, np.ndarray]:
    pdf = read_preprocessed(out / "preprocessed", [*columns, "split"])
    pdf = pdf[pdf["split"] == split]
    return {c: (np.stack(pdf[c].to_numpy()) if c == "features" else pdf[c].to_numpy())
            for c in columns}


@pytest.fixture(scope="module")
def run(spark, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("imbalance")
    _write_table(tmp / "imbalanced.csv")
    cfg = load_config(ROOT / "conf" / "tabular_classification.yaml", [
        f"data.input={tmp / 'imbalanced.csv'}", f"output.dir={tmp / 'run'}",
        "train.epochs=8", "train.lr=0.005", "train.hidden_dim=16", "train.num_processes=1",
        "compress.variants=[]", "evaluate.baseline=false", "evaluate.threshold=f1"])
    assert cfg.train.class_weights == "auto"  # the default, not set here
    run_pipeline(spark, cfg)
    return cfg.out


def test_auto_applies_sklearn_balanced_weights(run: Path) -> None:
    labels = read_json(run / "model" / "labels.json")
    y = _split(run, "train", ["label_index"])["label_index"]
    decision = read_json(run / "manifest.json")["train"]["class_weights"]
    assert decision["mode"] == "auto"
    assert decision["applied"] is True
    np.testing.assert_allclose(decision["weights"], compute_class_weight(
        "balanced", classes=np.arange(len(labels)), y=y), rtol=1e-12)


def test_minority_found_as_well_as_balanced_logistic_regression(run: Path) -> None:
    """The weighting alone: the selected model's most probable label (p >= 0.5, before
    any threshold) on the test rows, by balanced accuracy, against scikit-learn's
    class_weight='balanced' LogisticRegression on the same encoded rows; an unweighted
    one shows what the imbalance costs without handling."""
    import pyarrow.parquet as pq

    tr = _split(run, "train", ["features", "label_index"])
    te = _split(run, "test", ["id", "features", "label_index"])
    ref = LogisticRegression(class_weight="balanced", max_iter=2000).fit(
        tr["features"], tr["label_index"])
    plain = LogisticRegression(max_iter=2000).fit(tr["features"], tr["label_index"])
    ref_bacc = balanced_accuracy_score(te["label_index"], ref.predict(te["features"]))
    plain_bacc = balanced_accuracy_score(te["label_index"], plain.predict(te["features"]))
    scores = pq.read_table(str(run / "eval_scores")).to_pandas()
    scores = scores[scores["split"] == "test"]
    positive = read_json(run / "model" / "labels.json")[1]
    p1 = np.array([p[1] for p in scores["probability"]])
    ours = balanced_accuracy_score(scores["label"] == positive, p1 >= 0.5)
    assert len(scores) == len(te["id"])
    assert plain_bacc < ref_bacc - 0.05  # the table is imbalanced enough to matter
    assert ours >= ref_bacc - 0.05, (ours, ref_bacc, plain_bacc)


def test_f1_threshold_chosen_on_fold0_and_applied_by_scoring(run: Path) -> None:
    import pyarrow.parquet as pq

    selection = read_json(run / "compressed" / "selection.json")
    rec = selection["threshold"]
    labels = read_json(run / "model" / "labels.json")
    assert rec["variant"] == selection["selected"]
    assert rec["positive_label"] == labels[1]
    assert read_json(run / "metrics.json")["threshold"] == rec
    assert read_json(run / "manifest.json")["compress"]["threshold"] == rec
    assert "decision threshold (f1" in (run / "report.html").read_text()
    t = rec["value"]

    scores = pq.read_table(str(run / "eval_scores")).to_pandas()
    scores = scores[scores["model_variant"] == selection["selected"]]
    p1 = np.array([p[1] for p in scores["probability"]])
    # Scoring: the prediction is the positive label exactly where p1 >= t.
    expected = np.where(p1 >= t, labels[1], labels[0])
    assert (scores["prediction"].to_numpy() == expected).all()
    assert ((p1 >= t) != (p1 > 0.5)).any()  # the threshold changed some predictions

    # The choice: fold 0 of val, F1 as scikit-learn computes it on the same rows, and
    # within the grid's resolution of the best F1 over every threshold.
    val = _split(run, "val", ["id", "fold"])
    fold0 = set(val["id"][val["fold"] == 0].tolist())
    rows = scores[scores["id"].isin(fold0)]
    y = (rows["label"] == labels[1]).to_numpy()
    p = np.array([q[1] for q in rows["probability"]])
    assert rec["rows"] == len(rows)
    f1_at_t = f1_score(y, p >= t)
    assert rec["chosen_on_metrics"]["at_threshold"]["f1"] == pytest.approx(f1_at_t, abs=1e-12)
    prec, recall, _ = precision_recall_curve(y, p)
    with np.errstate(invalid="ignore"):
        best = np.nanmax(2 * prec * recall / (prec + recall))
    assert f1_at_t >= best - 0.01
    assert f1_at_t >= f1_score(y, p >= 0.5)
