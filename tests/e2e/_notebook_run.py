"""One small run of the four stage notebooks, shared by the notebook and tracking tests.

``notebooks/01_explore_preprocess.py`` .. ``04_score_evaluate.py`` run in sequence in one
Python process (one JVM) in a scratch folder, on the first 3,000 rows of UCI Adult with a
16-wide MLP, 2 epochs, int8_dynamic only and MLflow tracking on; then the nightly path
(`sparkforge score` with run.date and score.input) runs once from the command line on
the same run directory. About 2.5 min on 2 cores (142 s with the tests that share it).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from sparkforge.datasets import write_demo_data

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ("01_explore_preprocess.py", "02_train.py", "03_compress.py",
             "04_score_evaluate.py")
ROWS = 3000
RUN_DATE = "2026-11-24"


@dataclass(frozen=True)
class NotebookRun:
    cwd: Path
    out: Path
    input_csv: Path
    new_csv: Path
    stdout: str
    params: dict[str, str]

    def manifest(self) -> dict:
        return json.loads((self.out / "manifest.json").read_text())


def _head(src: Path, dest: Path, rows: int) -> None:
    with open(src, newline="") as fin, open(dest, "w", newline="") as fout:
        for i, line in enumerate(fin):
            if i > rows:
                break
            fout.write(line)


@pytest.fixture(scope="session")
def notebook_run(tmp_path_factory: pytest.TempPathFactory) -> NotebookRun:
    cwd = tmp_path_factory.mktemp("notebooks")
    (cwd / "conf").symlink_to(ROOT / "conf")
    write_demo_data(cwd / "data")
    input_csv, new_csv = cwd / "data" / "adult_small.csv", cwd / "data" / "new_small.csv"
    _head(cwd / "data" / "adult.csv", input_csv, ROWS)
    _head(cwd / "data" / "new_customers.csv", new_csv, 500)
    params = {"config": "conf/demo_tabular.yaml", "output_dir": "runs/nb",
              "input": str(input_csv.relative_to(cwd)), "epochs": "2",
              "variants": "int8_dynamic",
              "overrides": "train.hidden_dim=16 tracking.mlflow=true"}
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("_run_notebooks.py")), json.dumps(params),
         *(str(ROOT / "notebooks" / nb) for nb in NOTEBOOKS)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"notebooks failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    # The nightly path, from the command line, on the notebooks' run directory.
    nightly = subprocess.run(
        [sys.executable, "-m", "sparkforge", "score", "--config", params["config"],
         "--set", "output.dir=runs/nb", "--set", "tracking.mlflow=true",
         "--set", f"run.date={RUN_DATE}", "--set", f"score.input={new_csv}"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert nightly.returncode == 0, f"dated score failed:\n{nightly.stderr[-4000:]}"
    return NotebookRun(cwd, cwd / "runs" / "nb", input_csv, new_csv, proc.stdout, params)


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
