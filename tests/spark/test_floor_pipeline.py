"""The floor: the whole pipeline on the oldest stack pyproject.toml admits.

Runs in the petastorm lane (`make test-petastorm`: .venv-petastorm with pyspark 4.0.5,
pyarrow 14.0.2, numpy 1.26.4, pandas 2.2.3, the floor of every declared range); the main
run, on the newest stack, skips it. pyspark 4.0 has no ``arrow_udf``, so the tokenizer
takes the ``pandas_udf`` fallback of ``sparkforge.spark.udf``; the tabular features are
encoded in Spark SQL (compact) and the tabular run trains through petastorm.

Two small in-process pipelines on the session's ``spark``: a tabular CSV with malformed
rows (1 epoch, int8_dynamic, the baseline) and a text CSV with a trained tokenizer (1
epoch, embedding_bag). Rows in = rows kept + rows quarantined, counted from the input;
metrics equal scikit-learn's on the published scores. About 2 minutes on 2 cores.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyspark
import pytest
from sklearn.metrics import accuracy_score

from sparkforge.artifacts import read_json
from sparkforge.config import load_config
from sparkforge.jobs import run_pipeline
from sparkforge.spark.udf import has_native_arrow_udf

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    tuple(int(p) for p in pyspark.__version__.split(".")[:2]) >= (4, 1),
    reason="the floor lane (pyspark 4.0.x) runs it: make test-petastorm")


def _check(out: Path, rows_in: int, bad: int, min_accuracy: float) -> None:
    run = read_json(out / "eval_scores" / "_run_manifest.json")
    assert read_json(out / "manifest.json")["preprocess"]["rows_in"] == rows_in
    assert run["rows_in"] == rows_in
    assert run["rows_scored"] + run["rows_quarantined"] == rows_in
    assert run["rows_quarantined"] == bad
    metrics = read_json(out / "metrics.json")
    scores = pd.read_parquet(out / "eval_scores")
    for variant, m in metrics["variants"].items():
        test = scores[(scores["model_variant"] == variant) & (scores["split"] == "test")]
        assert len(test) > 0
        assert m["accuracy"] == pytest.approx(accuracy_score(test["label"], test["prediction"]))
    assert metrics["variants"]["fp32"]["accuracy"] >= min_accuracy


def test_the_floor_has_no_arrow_udf() -> None:
    assert not has_native_arrow_udf()  # so the pipelines below ran the fallback


def test_tabular_pipeline_on_the_floor(spark: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n, bad = 1200, 7
    x = rng.normal(size=(n, 2))
    color = rng.choice(["red", "green", "blue"], size=n)
    y = np.where(2 * x[:, 0] - x[:, 1] + np.where(color == "red", 1.0, -0.5) > 0, "yes", "no")
    a = x[:, 0].round(4).astype(object)
    a[rng.choice(n, bad, replace=False)] = "not a number"
    inp = tmp_path / "t.csv"
    pd.DataFrame({"a": a, "b": x[:, 1].round(4), "color": color, "y": y}).to_csv(
        inp, index=False)
    cfg = load_config(ROOT / "conf" / "tabular_classification.yaml", [
        f"data.input={inp}", "data.label_column=y", f"output.dir={tmp_path / 'run'}",
        "train.epochs=3", "train.num_processes=1", "train.hidden_dim=16", "train.lr=0.01",
        # petastorm reads the compact features (floats, ints, a constant) like any column
        "train.loader=petastorm"])
    run_pipeline(spark, cfg)
    _check(cfg.out, n, bad, min_accuracy=0.85)


def test_text_pipeline_on_the_floor(spark: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    pos, neg = ["superb", "moving", "charming"], ["dull", "awful", "boring"]
    filler = ["the", "film", "story", "was", "a", "really", "plot", "and"]
    inp, n = tmp_path / "r.csv", 800
    with open(inp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["review", "sentiment"])
        for i in range(n):
            label = str(rng.choice(["up", "down"]))
            words = [*rng.choice(filler, size=6), *rng.choice(pos if label == "up" else neg,
                                                              size=2), f"w{i}"]
            rng.shuffle(words)
            w.writerow([" ".join(words), label])
    cfg = load_config(ROOT / "conf" / "text_classification.yaml", [
        f"data.input={inp}", "data.text_column=review", "data.label_column=sentiment",
        f"output.dir={tmp_path / 'run'}", "tokenizer.kind=trained",
        "tokenizer.vocab_size=200", "train.model=embedding_bag", "train.epochs=4",
        "train.num_processes=1", "compress.variants=[]", "evaluate.baseline=false"])
    run_pipeline(spark, cfg)
    _check(cfg.out, n, 0, min_accuracy=0.9)
