"""Helpers of the cluster tests: the drivers' environment, the shared run's layout, Spark
event logs, and ids counted from the input file."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from scripts import cluster as sc

from _inputs import write_inf_rows_csv

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# The shared run's input: y = [a + b > 0] on N_GOOD rows, and N_BAD rows whose ``a`` is
# inf (quarantined as bad_value:a at preprocess and at every score).
N_GOOD, N_BAD = 400, 6
PUBLISHED_DATE = "2026-01-01"  # the date the shared run's score stage publishes
# Spark properties of every run on the cluster: loopback only, few shuffle partitions (the
# default 200 is all scheduling overhead at this size), task retries allowed (the local
# suite's session sets spark.task.maxFailures=1). They go in a YAML file, not in
# `--set spark.conf.<key>=...`: a dotted Spark key there is split into nested mappings.
SPARK_CONF: dict[str, Any] = {"spark.driver.host": "127.0.0.1",
                              "spark.driver.bindAddress": "127.0.0.1",
                              "spark.ui.enabled": False,
                              "spark.sql.shuffle.partitions": 4,
                              "spark.task.maxFailures": 4}


def write_config(path: Path, extends: Path, spark_conf: dict[str, Any] | None = None,
                 **sections: Any) -> Path:
    """A config file that extends ``extends`` with ``spark.conf`` entries and sections."""
    doc: dict[str, Any] = {"extends": str(extends), **sections}
    if spark_conf:
        doc["spark"] = {"conf": spark_conf}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def event_log_conf(folder: Path) -> dict[str, Any]:
    """Spark properties that make Spark write its event log (JSON lines) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return {"spark.eventLog.enabled": True, "spark.eventLog.dir": folder.as_uri(),
            "spark.eventLog.compress": False}


def write_input(path: Path, seed: int = 5) -> tuple[list[str], list[str]]:
    """The shared run's CSV; returns (good ids, bad ids), counted here from the rows."""
    return write_inf_rows_csv(path, N_GOOD, N_BAD, seed, "r")


@dataclass(frozen=True)
class SharedRun:
    out: Path
    input: Path
    good_ids: list[str]  # the input's ids whose row is valid (scored)
    bad_ids: list[str]  # the input's ids whose ``a`` is inf (quarantined)
    config: Path  # the run's config (input, output, model, epochs, spark.conf)
    summary: dict[str, Any]  # what each stage returned
    trace: Path  # per-epoch, per-rank ids the ranks trained on
    failed_marker: Path  # written by rank 1 when the injected failure fired
    events: Path  # the run's Spark event log
    seconds: float
    stderr: str  # the spark-submit process's


def cli_env(cluster: sc.Cluster, **extra: str) -> dict[str, str]:
    """Environment of a driver subprocess: this checkout's lib first (the shared venv's
    editable install may point at another checkout), the cluster as master."""
    return {**os.environ, "SPARKFORGE_MASTER": cluster.master_url,
            "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1",
            "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT / "lib"),
                                                      os.environ.get("PYTHONPATH", "")] if p),
            "SPARKFORGE_LOG_LEVEL": "WARNING", **extra}


def read_events(folder: Path) -> list[dict[str, Any]]:
    """Every event of every application log under ``folder`` (Spark 4 writes a folder
    ``eventlog_v2_<app>/`` per application; a killed driver leaves its last line cut)."""
    events = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        for line in f.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def input_ids(csv: Path) -> list[str]:
    """The ids of the input, counted from the file itself."""
    return pd.read_csv(csv, dtype={"id": str})["id"].tolist()


def spark_submit_cmd(master: str, py_files: Path, app: Path, *args: str) -> list[str]:
    """The README's spark-submit line (section "spark-submit") for the application
    ``app``: the standalone properties file, the package zip as --py-files."""
    import pyspark

    return [str(Path(pyspark.__file__).parent / "bin" / "spark-submit"), "--master", master,
            "--properties-file", str(ROOT / "conf" / "spark" / "standalone.conf"),
            "--py-files", str(py_files), str(app), *args]


def submit_env() -> dict[str, str]:
    """A spark-submit driver's environment: no PYTHONPATH, so the driver imports sparkforge
    from the zip (spark-submit puts --py-files first on its path), not from lib/."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "SPARKFORGE_MASTER", "SPARK_REMOTE")}
    env.update(PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1",
               SPARKFORGE_LOG_LEVEL="INFO")
    return env


def published_ids(part: Path, variant: str) -> list[str]:
    scores = pd.read_parquet(part, columns=["id", "model_variant"])
    return scores.loc[scores["model_variant"] == variant, "id"].tolist()
