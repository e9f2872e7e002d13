"""The whole pipeline through Spark Connect (``SPARK_REMOTE``): what it publishes is
checked against the input and scikit-learn, and its split against a local run's.

Input: 406 generated rows (6 with a non-finite feature), 1 epoch, train.local_mode=false
(TorchDistributor's barrier tasks on the server, the way it supports Connect), one
compression variant. The Connect run is the CLI in a subprocess, against the session's
server (conftest.connect_server); the local reference is the preprocess stage alone, in
this process on the ``spark`` fixture (the split is a hash of the id: the same rows must
land in the same splits whichever session ran it). Training on the ranks is compared with
local mode by tests/spark/test_train_distributor.py, so the local side trains nothing.
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
from sparkforge import run_stage
from sparkforge.config import load_config

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


def test_pipeline_through_connect_publishes_what_its_input_and_sklearn_say(
        connect_server: cs.Server, spark: Any, tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    bad_ids = _write_input(data)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "extends": str(ROOT / "conf" / "tabular_classification.yaml"),
        "data": {"input": str(data), "label_column": "y", "id_column": "id"},
        "train": {"local_mode": False, "epochs": 1, "lr": 0.02},
        "compress": {"variants": ["int8_dynamic"]},
        "spark": {"conf": {"spark.sql.shuffle.partitions": 4}}}, sort_keys=False))

    local_out, connect_out = tmp_path / "local", tmp_path / "connect"
    local_cfg = load_config(config, [f"output.dir={local_out}"])
    run_stage("preprocess", spark, local_cfg)

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

    got = _outcome(connect_out)
    local = json.loads((local_out / "manifest.json").read_text())["preprocess"]
    # counts from the input file itself
    assert got["preprocess_rows_in"] == N_GOOD + N_BAD
    assert got["counts"] == (N_GOOD + N_BAD, N_GOOD, N_BAD)
    assert got["reasons"] == {"bad_value:a": N_BAD}
    assert got["quarantined_ids"] == bad_ids
    # the same split as the local session's preprocess
    assert got["rows_per_split"] == local["rows_per_split"]
    assert sum(got["rows_per_split"].values()) == N_GOOD
    # every variant of the config was scored: the selected one on every row, the others
    # on the test split
    variants = {"fp32", "int8_dynamic", "baseline"}
    assert set(got["per_variant"]) == set(got["metrics"]) == variants
    assert got["per_variant"][got["selected"]] == N_GOOD
    for variant in variants - {got["selected"]}:
        assert got["per_variant"][variant] == got["rows_per_split"]["test"]
    # The Connect run's metrics are scikit-learn's on its own published scores, and the
    # model it selected learned the signal (y = [a + b > 0]).
    scores = pd.read_parquet(connect_out / "eval_scores")
    for variant, m in got["metrics"].items():
        test = scores[(scores["model_variant"] == variant) & (scores["split"] == "test")]
        assert len(test) == got["rows_per_split"]["test"]
        assert m["accuracy"] == pytest.approx(accuracy_score(test["label"], test["prediction"]))
        assert m["f1_macro"] == pytest.approx(
            f1_score(test["label"], test["prediction"], average="macro"))
    assert got["metrics"][got["selected"]]["accuracy"] > 0.75

    # score_parquet through Connect (a client process again): the run's preprocessed rows
    # scored by the selected variant, with its threshold, into files that the client
    # commits; the same predictions as the pipeline published for those rows.
    sel = json.loads((connect_out / "compressed" / "selection.json").read_text())
    rec = sel.get("threshold") or {}
    args = {"source": str(connect_out / "preprocessed"), "dest": str(tmp_path / "files"),
            "model_path": str(connect_out / sel["paths"][sel["selected"]]),
            "labels": json.loads((connect_out / "model" / "labels.json").read_text()),
            "variant": sel["selected"],
            "threshold": rec["value"] if rec.get("variant") == sel["selected"] else None}
    code = (
        "import json, sys\n"
        "from sparkforge.artifacts import sha256_file\n"
        "from sparkforge.config import SparkConfig\n"
        "from sparkforge.infer import score_parquet\n"
        "from sparkforge.spark.session import get_session, is_connect\n"
        "a = json.loads(sys.argv[1])\n"
        "spark = get_session(SparkConfig(app_name='score-parquet-connect'))\n"
        "assert is_connect(spark)\n"
        "r = score_parquet(spark, a['source'], a['dest'], model_path=a['model_path'],\n"
        "                  sha256=sha256_file(a['model_path']), inputs=['features'],\n"
        "                  labels=a['labels'], variant=a['variant'], threshold=a['threshold'])\n"
        "print(json.dumps({'rows': r.rows, 'tasks': r.tasks}))\n")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = json.loads(proc.stdout.strip().splitlines()[-1])
    assert done["rows"] == N_GOOD
    assert done["tasks"] >= 2  # 4 per task slot of the server's local[2], row groups allowing
    files = pd.read_parquet(tmp_path / "files").set_index("id").sort_index()
    published = scores[scores["model_variant"] == sel["selected"]].set_index("id").sort_index()
    assert list(files.index) == list(published.index)
    assert list(files["prediction"]) == list(published["prediction"])
    assert list(files["split"]) == list(published["split"])
