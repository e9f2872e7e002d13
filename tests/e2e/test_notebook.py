"""The notebooks run top to bottom, as Databricks runs their cells.

notebooks/pipeline_walkthrough.py: the whole tabular pipeline on every 4th row of UCI
Adult (the CLI's pipeline tests use generated data; `make demo` runs the full table).
notebooks/01_..04_ (explore + preprocess, train, compress, score + evaluate): one small
shared run (conftest's ``notebook_run``: 3,000 rows, 2 epochs, a 16-wide MLP; about 2.5
min, shared with test_tracking.py). All part of `make test`. The notebooks read `conf/`
and `data/` relative to their working directory, so they run in a scratch folder holding
a link to the repo's `conf/` and freshly written demo data.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from _notebook_run import NotebookRun, csv_rows

from sparkforge.datasets import write_demo_data

ROOT = Path(__file__).resolve().parents[2]


def _every_kth_row(path: Path, k: int) -> int:
    """Keep the header and every k-th row of ``path``; returns the rows kept."""
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[1::k]
    path.write_text(lines[0] + "".join(kept))
    return len(kept)


def test_notebook_runs_the_pipeline(tmp_path: Path) -> None:
    (tmp_path / "conf").symlink_to(ROOT / "conf")
    write_demo_data(tmp_path / "data")
    # Every 4th row of Adult (12,211 of 48,842, both source files): the notebook runs as
    # written in a quarter of the time; the full table is `make demo`'s.
    rows_in_csv = _every_kth_row(tmp_path / "data" / "adult.csv", 4)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.run([sys.executable, str(ROOT / "notebooks" / "pipeline_walkthrough.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"notebook failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    out = tmp_path / "runs" / "notebook_tabular"
    metrics = json.loads((out / "metrics.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["train"]["epochs_run"] == 3  # the notebook's own override took effect
    rows = manifest["preprocess"]["rows_in"]
    assert rows == rows_in_csv
    assert manifest["score"]["rows_in"] == rows
    assert manifest["score"]["rows_scored"] + manifest["score"]["rows_quarantined"] == rows
    # as good as scikit-learn's LogisticRegression on one-hot (about 0.85) on the same rows
    assert metrics["baseline"]["n_rows"] == metrics["variants"]["fp32"]["n_rows"]
    assert metrics["variants"]["fp32"]["accuracy"] > 0.82
    assert metrics["variants"]["fp32"]["accuracy"] >= metrics["baseline"]["accuracy"] - 0.02
    # the last cell's aggregate printed one count per (split, variant, prediction)
    assert "|split|model_variant|prediction|count|" in proc.stdout


# ---------------------------------------------------------------------------
# The four stage notebooks (notebooks/01_..04_), run once by conftest's `notebook_run`
# fixture on 3,000 rows of Adult (about 2.5 min with the tracking test that shares it).


def _shown_row(stdout: str, *cells: object) -> bool:
    """A row of a DataFrame.show() table holding exactly these cells, in this order."""
    text = [str(c).lower() if isinstance(c, bool) else str(c) for c in cells]  # Spark: true
    pattern = r"\|\s*" + r"\s*\|\s*".join(re.escape(t) for t in text) + r"\s*\|"
    return re.search(pattern, stdout) is not None


def test_explore_notebook_counts_match_the_input(notebook_run: NotebookRun) -> None:
    rows = csv_rows(notebook_run.input_csv)
    manifest = notebook_run.manifest()
    pre = manifest["preprocess"]
    assert pre["rows_in"] == len(rows) == 3000
    assert pre["rows_kept"] + pre["rows_quarantined"] == len(rows)
    assert sum(pre["rows_per_split"].values()) == pre["rows_kept"]
    # The explore cell's label distribution equals a count of the CSV's own labels.
    for label, n in Counter(r["income"] for r in rows).items():
        assert _shown_row(notebook_run.stdout, label, n), f"no shown row for {label}: {n}"
    # The closing table: rows per (split, label), each equal to the preprocessed Parquet's.
    import pyarrow.dataset as ds

    table = ds.dataset(notebook_run.out / "preprocessed", partitioning="hive").to_table(
        columns=["split", "label"]).to_pandas()
    for (split, label), n in table.value_counts(["split", "label"]).items():
        assert _shown_row(notebook_run.stdout, split, label, n)


def test_train_and_compress_notebooks_record_what_they_show(notebook_run: NotebookRun) -> None:
    manifest = notebook_run.manifest()
    train = manifest["train"]
    assert train["epochs_run"] == 2  # the `epochs` widget took effect
    history = json.loads((notebook_run.out / "model" / "history.json").read_text())
    assert history == train["history"]
    for h in history:
        assert _shown_row(notebook_run.stdout, h["epoch"], h["train_loss"], h["val_loss"])
    assert (notebook_run.out / "notebooks" / "training_curves.png").stat().st_size > 1000
    selection = json.loads((notebook_run.out / "compressed" / "selection.json").read_text())
    assert set(selection["variants"]) == {"fp32", "int8_dynamic", "baseline"}
    for name, v in selection["variants"].items():
        assert _shown_row(notebook_run.stdout, name, name == selection["selected"],
                          v["file_bytes"])


def test_score_evaluate_notebook_metrics_match_sklearn(notebook_run: NotebookRun) -> None:
    import pandas as pd
    from sklearn.metrics import accuracy_score, f1_score

    manifest = notebook_run.manifest()
    score = manifest["score"]
    assert score["rows_in"] == manifest["preprocess"]["rows_in"]
    assert score["rows_scored"] + score["rows_quarantined"] == score["rows_in"]
    metrics = json.loads((notebook_run.out / "metrics.json").read_text())
    scores = pd.read_parquet(notebook_run.out / "eval_scores")
    test = scores[scores["split"] == "test"]
    for name, m in metrics["variants"].items():
        rows = test[test["model_variant"] == name]
        assert m["n_rows"] == len(rows) > 0
        assert m["accuracy"] == pytest.approx(accuracy_score(rows["label"], rows["prediction"]))
        assert m["f1_macro"] == pytest.approx(
            f1_score(rows["label"], rows["prediction"], average="macro"))
        assert _shown_row(notebook_run.stdout, name, name == metrics["selected"], m["n_rows"])
    assert (notebook_run.out / "report.html").stat().st_size > 10_000
    # the scores aggregate: one shown row per (split, variant, prediction), Spark's counts
    for (split, variant, pred), n in scores.value_counts(
            ["split", "model_variant", "prediction"]).items():
        assert _shown_row(notebook_run.stdout, split, variant, pred, n)
