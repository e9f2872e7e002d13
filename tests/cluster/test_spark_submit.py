"""The whole pipeline by spark-submit on the standalone cluster, as the README shows it:

    spark-submit --master spark://... --properties-file conf/spark/standalone.conf \
      --py-files dist/sparkforge.zip spark_jobs/pipeline.py --config ...

with ``train.local_mode=false`` (two barrier ranks, one on each 1-core worker), 406 rows
(6 with a non-finite feature), 1 epoch, one compression variant. The cluster is the session
fixture's (conftest.cluster), shared with the other cluster tests. The zip is built by
scripts/package.py, the code behind ``make package``. 2.5 min on 2 shared cores (151 s: the
spark-submit run 133 s, the cluster fixture 13 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _cluster_helpers import ROOT, write_config
from scripts import cluster as sc
from scripts import package

N_GOOD, N_BAD = 400, 6


@pytest.fixture(scope="module")
def zip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return package.build_zip(tmp_path_factory.mktemp("dist"))


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


def _input(path: Path) -> tuple[list[str], list[str]]:
    """406 rows: y = [a + b > 0], and 6 rows whose ``a`` is inf (quarantined as
    bad_value:a at preprocess and at score). Returns (good ids, bad ids)."""
    rng = np.random.default_rng(12)
    n = N_GOOD + N_BAD
    x = rng.normal(size=(n, 2))
    df = pd.DataFrame({"id": [f"s{i:04d}" for i in range(n)], "a": x[:, 0], "b": x[:, 1],
                       "c": rng.choice(["u", "v", "w"], n),
                       "y": np.where(x[:, 0] + x[:, 1] > 0, "p", "q")})
    bad = rng.choice(n, N_BAD, replace=False)
    df["a"] = df["a"].astype(object)
    df.loc[bad, "a"] = "inf"
    df.to_csv(path, index=False)
    bad_ids = df.loc[bad, "id"].tolist()
    return sorted(set(df["id"]) - set(bad_ids)), sorted(bad_ids)


def spark_submit_cmd(master: str, py_files: Path, config: Path) -> list[str]:
    """The README's spark-submit line (section "spark-submit")."""
    import pyspark

    return [str(Path(pyspark.__file__).parent / "bin" / "spark-submit"), "--master", master,
            "--properties-file", str(ROOT / "conf" / "spark" / "standalone.conf"),
            "--py-files", str(py_files), str(ROOT / "spark_jobs" / "pipeline.py"),
            "--config", str(config)]


def test_pipeline_by_spark_submit_on_the_standalone_cluster(
        cluster: sc.Cluster, zip_path: Path, tmp_path: Path) -> None:
    from sklearn.metrics import accuracy_score, f1_score

    data = tmp_path / "in.csv"
    good, bad = _input(data)
    out = tmp_path / "run"
    config = write_config(
        tmp_path / "run.yaml", ROOT / "conf" / "tabular_classification.yaml",
        data={"input": str(data), "label_column": "y", "id_column": "id"},
        train={"local_mode": False, "epochs": 1, "lr": 0.02},
        compress={"variants": ["int8_dynamic"]}, output={"dir": str(out)})
    # The driver imports sparkforge from the zip (spark-submit puts --py-files first on
    # its path), not from this checkout's lib/.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "SPARKFORGE_MASTER", "SPARK_REMOTE")}
    env.update(PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1",
               SPARKFORGE_LOG_LEVEL="WARNING")
    proc = subprocess.run(spark_submit_cmd(cluster.master_url, zip_path, config),
                          capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    said = "\n".join(line for line in proc.stderr.splitlines() if "sparkforge" in line)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{said[-4000:]}\n" \
                                 f"{proc.stderr[-3000:]}"

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["train"]["local_mode"] is False
    assert manifest["train"]["num_processes"] == 2
    assert manifest["preprocess"]["rows_in"] == N_GOOD + N_BAD  # counted by pandas above

    # Rows in = scored + quarantined, id by id, against the input file.
    run = json.loads((out / "eval_scores" / "_run_manifest.json").read_text())
    selected = run["model_variant"]
    assert (run["rows_in"], run["rows_scored"], run["rows_quarantined"]) == \
           (N_GOOD + N_BAD, N_GOOD, N_BAD)
    assert run["quarantine_reasons"] == {"bad_value:a": N_BAD}
    scores = pd.read_parquet(out / "eval_scores")
    chosen = scores[scores["model_variant"] == selected]
    assert sorted(chosen["id"]) == good  # each good id exactly once
    assert sorted(pd.read_parquet(out / "quarantine" / "eval_scores")["id"]) == bad

    # The evaluation's metrics equal scikit-learn's on the published test-split scores.
    metrics = json.loads((out / "metrics.json").read_text())
    test = chosen[chosen["split"] == "test"]
    assert len(test) > 20
    m = metrics["variants"][selected]
    assert m["accuracy"] == pytest.approx(accuracy_score(test["label"], test["prediction"]))
    assert m["f1_macro"] == pytest.approx(
        f1_score(test["label"], test["prediction"], average="macro"))
    # y = [a + b > 0] is learnt in one epoch well above the majority class
    assert m["accuracy"] > 0.75
