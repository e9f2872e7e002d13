"""notebooks/pipeline_walkthrough.py runs top to bottom, as Databricks runs its cells.

The whole tabular pipeline on UCI Adult (about 2 min): part of `make test`.
The notebook reads `conf/` and `data/` relative to its working directory, so it runs in
a scratch folder holding a link to the repo's `conf/` and freshly written demo data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sparkforge.datasets import write_demo_data

ROOT = Path(__file__).resolve().parents[2]


def test_notebook_runs_the_pipeline(tmp_path: Path) -> None:
    (tmp_path / "conf").symlink_to(ROOT / "conf")
    write_demo_data(tmp_path / "data")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.run([sys.executable, str(ROOT / "notebooks" / "pipeline_walkthrough.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"notebook failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    out = tmp_path / "runs" / "notebook_tabular"
    metrics = json.loads((out / "metrics.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["train"]["epochs_run"] == 3  # the notebook's own override took effect
    rows = manifest["preprocess"]["rows_in"]
    assert rows == 48842  # UCI Adult, train + test files
    assert manifest["score"]["rows_in"] == rows
    assert manifest["score"]["rows_scored"] + manifest["score"]["rows_quarantined"] == rows
    assert metrics["variants"]["fp32"]["accuracy"] > 0.8
    # the last cell's aggregate printed one count per (split, variant, prediction)
    assert "|split|model_variant|prediction|count|" in proc.stdout
