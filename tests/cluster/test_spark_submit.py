"""The whole pipeline by spark-submit on the standalone cluster, as the README shows it:

    spark-submit --master spark://... --properties-file conf/spark/standalone.conf \
      --py-files dist/sparkforge.zip <application> --config ...

The run is the session's shared one (conftest.shared_run): 406 rows (6 with a non-finite
feature), train.local_mode=false (two barrier ranks, one on each 1-core worker), one
compression variant, run.date set. The zip is built by scripts/package.py, the code
behind ``make package``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from _cluster_helpers import (
    N_BAD,
    N_GOOD,
    PUBLISHED_DATE,
    ROOT,
    SharedRun,
    published_ids,
    read_events,
)
from scripts.cluster import Cluster


def test_zip_holds_the_whole_package(zip_path: Path) -> None:
    """Every module of lib/sparkforge imports from the zip alone (what executors get)."""
    modules = sorted(".".join(p.relative_to(ROOT / "lib").with_suffix("").parts)
                     .removesuffix(".__init__")
                     for p in (ROOT / "lib" / "sparkforge").rglob("*.py")
                     if p.name != "__main__.py")  # importing it runs the CLI
    code = ("import importlib, json, sys\n"
            f"mods = {modules!r}\n"
            "files = {m: importlib.import_module(m).__file__ for m in mods}\n"
            "print(json.dumps(files))")
    env = {**os.environ, "PYTHONPATH": str(zip_path)}
    # -P: no script dir on sys.path; the cwd is not the checkout, so lib/ is not found
    # there. The venv may hold an editable install: the zip, first on the path, must win.
    proc = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                          env=env, cwd=zip_path.parent, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = json.loads(proc.stdout)
    assert set(files) == set(modules)
    assert all(f.startswith(str(zip_path) + os.sep) for f in files.values()), files


def test_pipeline_by_spark_submit_on_the_standalone_cluster(shared_run: SharedRun,
                                                           cluster: Cluster) -> None:
    from sklearn.metrics import accuracy_score, f1_score

    out = shared_run.out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["train"]["local_mode"] is False
    assert manifest["train"]["num_processes"] == 2
    assert manifest["preprocess"]["rows_in"] == N_GOOD + N_BAD  # counted by pandas
    assert manifest["preprocess"]["quarantine_reasons"] == {"bad_value:a": N_BAD}
    # the application ran on the cluster's master (its Spark event log says so)
    env = [e for e in read_events(shared_run.events)
           if e["Event"] == "SparkListenerEnvironmentUpdate"]
    assert env
    assert env[0]["Spark Properties"]["spark.master"] == cluster.master_url
    # Every Spark job names its stage for the UI (the job description), and the DataFrame
    # jobs carry the stage's tag (spark.addTag, which is what works over Connect too).
    starts = [e["Properties"] for e in read_events(shared_run.events)
              if e["Event"] == "SparkListenerJobStart"]
    stages = {p.get("spark.job.description") for p in starts}
    assert stages == {f"sparkforge {s}" for s in
                      ("preprocess", "train", "compress", "score", "evaluate")}
    tagged = [p for p in starts if p.get("spark.job.tags")]
    assert len(tagged) > len(starts) / 2
    for p in tagged:
        stage = p["spark.job.description"].split()[1]
        assert f"-sparkforge-{stage}," in p["spark.job.tags"] + ",", p

    # run.date is set: score and evaluate are that date's run. Rows in = scored +
    # quarantined, id by id, against the input file.
    part = out / "scores" / f"run_date={PUBLISHED_DATE}"
    run = json.loads((part / "_run_manifest.json").read_text())
    selected = run["model_variant"]
    assert (run["rows_in"], run["rows_scored"], run["rows_quarantined"]) == \
           (N_GOOD + N_BAD, N_GOOD, N_BAD)
    assert run["quarantine_reasons"] == {"bad_value:a": N_BAD}
    assert Counter(published_ids(part, selected)) == Counter(shared_run.good_ids)

    # The evaluation's metrics equal scikit-learn's on its test-split scores.
    evaluation = out / "evaluations" / f"run_date={PUBLISHED_DATE}"
    metrics = json.loads((evaluation / "metrics.json").read_text())
    scores = pd.read_parquet(out / metrics["scores"])
    test = scores[(scores["model_variant"] == metrics["selected"]) & (scores["split"] == "test")]
    assert len(test) > 20
    m = metrics["variants"][metrics["selected"]]
    assert m["accuracy"] == pytest.approx(accuracy_score(test["label"], test["prediction"]))
    assert m["f1_macro"] == pytest.approx(
        f1_score(test["label"], test["prediction"], average="macro"))
    # the rule y = [a + b > 0] is learnt in 2 epochs; the test split has ~40 rows
    assert m["accuracy"] > 0.85
