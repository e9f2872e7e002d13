"""notebooks/estimator.py runs top to bottom, as Databricks runs its cells.

A Pipeline (SQLTransformer + SparkForgeClassifier) fitted on 3,000 generated rows (two
epochs, one rank, int8_dynamic), held-back rows transformed, the model saved and loaded
back (about 1.5 min). It runs in a scratch folder: its run directory and saved model are
written under ``runs/`` there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_estimator_notebook_runs(tmp_path: Path) -> None:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARKFORGE_LOG_LEVEL": "WARNING"}
    proc = subprocess.run([sys.executable, str(ROOT / "notebooks" / "estimator.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"notebook failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    run = tmp_path / "runs" / "notebook_estimator"
    metrics = json.loads((run / "metrics.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["train"]["epochs_run"] == 2  # the widget default reached the config
    assert set(metrics["variants"]) == {"fp32", "int8_dynamic"}
    assert metrics["variants"]["fp32"]["accuracy"] > 0.85
    # the saved model: Spark ML metadata per stage, and the run's copy beside it
    saved = tmp_path / "runs" / "notebook_estimator_model"
    assert list((saved / "stages").glob("*SparkForgeClassificationModel*/run/manifest.json"))
    held = re.search(r"held-back accuracy: ([0-9.]+)", proc.stdout)
    assert held is not None, proc.stdout[-2000:]
    assert float(held.group(1)) > 0.85
    assert "rows whose probabilities differ after save and load: 0" in proc.stdout
