"""`sparkforge pipeline` end to end on CSVs the code has never seen, via the CLI.

Metrics in metrics.json are checked against scikit-learn on the scored rows.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {"n_rows", "accuracy", "precision_macro", "recall_macro", "f1_macro", "log_loss",
            "roc_auc", "confusion_matrix", "labels"}


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARKFORGE_LOG_LEVEL": "WARNING"}
    proc = subprocess.run([sys.executable, "-m", "sparkforge", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-5000:]}"
    return proc


def check_run(out: Path, min_accuracy: float) -> dict:  # type: ignore[type-arg]
    metrics = json.loads((out / "metrics.json").read_text())
    labels = json.loads((out / "model" / "labels.json").read_text())
    assert set(metrics["variants"]) == {"fp32", "int8_dynamic", "baseline"}
    assert metrics["selected"] in metrics["variants"]
    for v in metrics["variants"]:  # the gate's decision and figures travel with the metrics
        assert metrics["compression"]["variants"][v]["decision"]
    part = out / metrics["scores"]  # the pipeline's own scoring run: eval_scores/
    assert (part / "_SUCCESS").exists()
    scores = pd.read_parquet(part)
    assert list(scores.columns) == ["id", "label", "prediction", "probability", "split",
                                    "model_variant"]
    manifest = json.loads((out / "manifest.json").read_text())
    pre = manifest["preprocess"]
    assert pre["rows_in"] == pre["rows_kept"] + pre["rows_quarantined"]
    run = json.loads((part / "_run_manifest.json").read_text())
    # scoring re-reads the same input: every row is scored or quarantined, none lost
    assert run["rows_in"] == pre["rows_in"]
    assert run["rows_in"] == run["rows_scored"] + run["rows_quarantined"]
    selected = scores[scores["model_variant"] == metrics["selected"]]
    assert len(selected) == run["rows_scored"] == selected["id"].nunique()
    for variant, m in metrics["variants"].items():
        assert set(m) >= REQUIRED
        test = scores[(scores["model_variant"] == variant) & (scores["split"] == "test")]
        proba = np.stack(test["probability"].to_numpy())
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
        assert (np.array(labels)[proba.argmax(axis=1)] == test["prediction"]).all()
        assert m["n_rows"] == len(test) == pre["rows_per_split"]["test"]
        assert m["accuracy"] == pytest.approx(skm.accuracy_score(test["label"],
                                                                  test["prediction"]), abs=1e-9)
        assert m["f1_macro"] == pytest.approx(skm.f1_score(
            test["label"], test["prediction"], average="macro", labels=labels), abs=1e-9)
        assert m["log_loss"] == pytest.approx(skm.log_loss(test["label"], proba, labels=labels),
                                              abs=1e-9)
        if len(labels) == 2:
            auc = skm.roc_auc_score(test["label"] == labels[1], proba[:, 1])
            assert m["roc_auc"] == pytest.approx(auc, abs=1e-9)
        assert m["confusion_matrix"] == skm.confusion_matrix(
            test["label"], test["prediction"], labels=labels).tolist()
        assert m["accuracy"] >= min_accuracy, m
    html = (out / "report.html").read_text()
    assert "<img src=\"data:image/png;base64," in html
    return metrics


def _generated_tabular(path: Path, n: int = 3000) -> None:
    rng = np.random.default_rng(7)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    logit = 2.5 * x1 - 1.5 * x2 + np.where(color == "red", 1.5, -0.5)
    y = np.where(logit + rng.normal(scale=0.3, size=n) > 0, "approved", "denied")
    pd.DataFrame({"x1": x1.round(4), "x2": x2.round(4), "color": color,
                  "noise": rng.integers(0, 100, size=n), "decision": y}).to_csv(path, index=False)


def test_tabular_pipeline_on_a_generated_csv(tmp_path: Path) -> None:
    inp, out = tmp_path / "loans.csv", tmp_path / "run"
    _generated_tabular(inp)
    proc = run_cli("pipeline", "--config", "conf/tabular_classification.yaml",
                   "--set", f"data.input={inp}", "--set", "data.label_column=decision",
                   "--set", f"output.dir={out}", "--set", "train.epochs=6")
    metrics = check_run(out, min_accuracy=0.9)
    assert metrics["variants"]["fp32"]["labels"] == ["approved", "denied"]
    # the generic config's baseline, on the same rows, named in the summary
    assert "baseline onehot_logreg" in proc.stdout
    assert metrics["baseline"]["n_rows"] == metrics["variants"]["fp32"]["n_rows"]


def test_text_pipeline_with_a_trained_tokenizer(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    pos = ["wonderful", "moving", "brilliant", "charming", "superb", "delight"]
    neg = ["dull", "tedious", "awful", "boring", "mess", "clumsy"]
    filler = ["the", "film", "story", "actors", "was", "a", "really", "plot", "and", "it"]
    inp, out = tmp_path / "reviews.csv", tmp_path / "run"
    with open(inp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["review", "sentiment", "user"])
        for i in range(1500):
            label = rng.choice(["up", "down"])
            words = list(rng.choice(filler, size=8)) + list(
                rng.choice(pos if label == "up" else neg, size=2))
            rng.shuffle(words)
            w.writerow([" ".join(words), label, f"u{i % 37}"])
    run_cli("pipeline", "--config", "conf/text_classification.yaml",
            "--set", f"data.input={inp}", "--set", "data.text_column=review",
            "--set", "data.label_column=sentiment", "--set", f"output.dir={out}",
            "--set", "tokenizer.kind=trained", "--set", "tokenizer.vocab_size=300",
            "--set", "tokenizer.max_length=24", "--set", "train.epochs=3",
            "--set", "train.batch_size=32", "--set", "train.model=embedding_bag")
    check_run(out, min_accuracy=0.9)


def test_regression_pipeline(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    n = 2000
    x = rng.normal(size=(n, 3))
    kind = rng.choice(["a", "b"], size=n)
    y = 3 * x[:, 0] - 2 * x[:, 1] + np.where(kind == "a", 2.0, -2.0) + rng.normal(0, .1, n)
    inp, out = tmp_path / "reg.csv", tmp_path / "run"
    pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "kind": kind, "y": y}
                 ).to_csv(inp, index=False)
    run_cli("pipeline", "--config", "conf/tabular_classification.yaml",
            "--set", "task=tabular_regression", "--set", f"data.input={inp}",
            "--set", "data.label_column=y", "--set", f"output.dir={out}",
            "--set", "train.epochs=15", "--set", "train.batch_size=64")
    metrics = json.loads((out / "metrics.json").read_text())
    scores = pd.read_parquet(out / metrics["scores"])
    for variant, m in metrics["variants"].items():
        test = scores[(scores["model_variant"] == variant) & (scores["split"] == "test")]
        assert m["rmse"] == pytest.approx(skm.root_mean_squared_error(
            test["label"], test["prediction"]), abs=1e-9)
        assert m["r2"] == pytest.approx(skm.r2_score(test["label"], test["prediction"]),
                                        abs=1e-9)
        assert m["r2"] > 0.9, m
