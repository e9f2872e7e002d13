"""The whole pipeline through Spark Connect (``SPARK_REMOTE``) equals the local run.

Input: 406 generated rows (6 with a non-finite feature), 1 epoch, train.local_mode=false
(TorchDistributor's barrier tasks on the server, the way it supports Connect), one
compression variant. The local reference runs in this process on the ``spark`` fixture;
the Connect run is the CLI in a subprocess, against the session's server
(conftest.connect_server). 2.8 min on 2 shared cores (167 s: both runs 146 s, the server
17 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from scripts import connect as cs
from sklearn.metrics import accuracy_score, f1_score

from _inputs import write_inf_rows_csv
from sparkforge.config import load_config
from sparkforge.jobs import run_pipeline

ROOT = Path(__file__).resolve().parents[2]
N_GOOD, N_BAD = 400, 6


def _write_input(path: Path) -> list[str]:
    """y = [a + b > 0]; 6 rows have a = inf (quarantined as bad_value:a). Returns their ids."""
    return write_inf_rows_csv(path, N_GOOD, N_BAD, seed=21, id_prefix="k")[1]


def _outcome(out: Path) -> dict[str, Any]:
    manifest = json.loads((out / "manifest.json").read_text())
    run = json.loads((out / "eval_scores" / "_run_manifest.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    return {"preprocess_rows_in": manifest["preprocess"]["rows_in"],
            "rows_per_split": manifest["preprocess"]["rows_per_split"],
            "counts": (run["rows_in"], run["rows_scored"], run["rows_quarantined"]),
            "reasons": run["quarantine_reasons"], "selected": run["model_variant"],
            "per_variant": run["rows_scored_per_variant"],
            "quarantined_ids": sorted(pd.read_parquet(out / "quarantine" / "eval_scores")["id"]),
            "metrics": {v: {k: m[k] for k in ("accuracy", "f1_macro")}
                        for v, m in metrics["variants"].items()}}


def test_pipeline_through_connect_equals_the_local_run(
        connect_server: cs.Server, spark: Any, tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    bad_ids = _write_input(data)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "extends": str(ROOT / "conf" / "tabular_classification.yaml"),
        "data": {"input": str(data), "label_column": "y", "id_column": "id"},
        "train": {"local_mode": False, "epochs": 1, "lr": 0.02},
        "compress": {"variants": ["int8_dynamic"]},
        # the same partitioning on both sides: the ranks' shards are the Parquet files
        "spark": {"conf": {"spark.sql.shuffle.partitions": 4}}}, sort_keys=False))

    local_out, connect_out = tmp_path / "local", tmp_path / "connect"
    run_pipeline(spark, load_config(config, [f"output.dir={local_out}"]))

    env = {**os.environ, "SPARK_REMOTE": connect_server.url, "SPARKFORGE_LOG_LEVEL": "INFO",
           "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT / "lib"),
                                                     os.environ.get("PYTHONPATH", "")] if p)}
    env.pop("SPARKFORGE_MASTER", None)
    proc = subprocess.run([sys.executable, "-m", "sparkforge", "pipeline", "--config",
                           str(config), "--set", f"output.dir={connect_out}", "--verbose"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    # the CLI's own lines first (the cause), then the tail (a JVM stack may fill it)
    said = "\n".join(line for line in proc.stderr.splitlines() if "sparkforge" in line)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{said[-4000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    assert "Connect session on " + connect_server.url in proc.stderr  # not a local session

    got, want = _outcome(connect_out), _outcome(local_out)
    # counts from the input file itself
    assert got["preprocess_rows_in"] == N_GOOD + N_BAD
    assert got["counts"] == (N_GOOD + N_BAD, N_GOOD, N_BAD)
    assert got["reasons"] == {"bad_value:a": N_BAD}
    assert got["quarantined_ids"] == bad_ids
    # and equal to the local run's: the same splits, rows and quarantine, the same variants
    # scored (the selected one every row, the others the test split)
    for key in ("rows_per_split", "counts", "reasons", "quarantined_ids"):
        assert got[key] == want[key], key
    assert got["per_variant"].keys() == want["per_variant"].keys()
    assert sorted(got["per_variant"].values()) == sorted(want["per_variant"].values())
    # The Connect run's metrics are scikit-learn's on its own published scores, and each
    # variant's are the local run's within 2 of the ~40 test rows (the ranks' row order
    # after a shuffle is not fixed, so SGD may take a slightly different path).
    scores = pd.read_parquet(connect_out / "eval_scores")
    for variant, m in got["metrics"].items():
        test = scores[(scores["model_variant"] == variant) & (scores["split"] == "test")]
        assert m["accuracy"] == pytest.approx(accuracy_score(test["label"], test["prediction"]))
        assert m["f1_macro"] == pytest.approx(
            f1_score(test["label"], test["prediction"], average="macro"))
    assert got["metrics"].keys() == want["metrics"].keys()
    for variant, m in want["metrics"].items():
        assert got["metrics"][variant]["accuracy"] == pytest.approx(m["accuracy"], abs=0.05)
    assert want["metrics"][want["selected"]]["accuracy"] > 0.75
