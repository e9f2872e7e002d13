"""The same job on a real Spark standalone cluster (master + worker on 127.0.0.1).

Slow (starts its own JVMs): run by `make test-slow`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 60) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    spark_class = Path(sys.executable).parent / "spark-class"
    port = _free_port()
    logs = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    master = subprocess.Popen(
        [str(spark_class), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
         "--port", str(port), "--webui-port", str(_free_port())],
        # the log file lives as long as the daemon; closed when the process ends
        stdout=open(logs / "master.log", "w"), stderr=subprocess.STDOUT, env=env)  # noqa: SIM115
    url = f"spark://127.0.0.1:{port}"
    worker = None
    try:
        _wait_port(port)
        worker = subprocess.Popen(
            [str(spark_class), "org.apache.spark.deploy.worker.Worker", url, "--host",
             "127.0.0.1", "--cores", "2", "--memory", "3g", "--webui-port", str(_free_port()),
             "--work-dir", str(logs / "work")],
            stdout=open(logs / "worker.log", "w"),  # noqa: SIM115  (lives with the daemon)
            stderr=subprocess.STDOUT, env=env)
        time.sleep(5)
        yield url
    finally:
        for p in (worker, master):
            if p is not None:
                p.terminate()
                p.wait(timeout=30)


def test_pipeline_runs_unchanged_on_a_standalone_cluster(cluster: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = 2000
    x = rng.normal(size=(n, 2))
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1],
                  "y": np.where(x[:, 0] + x[:, 1] > 0, "p", "q")}).to_csv(
        tmp_path / "in.csv", index=False)
    out = tmp_path / "run"
    env = {**os.environ, "SPARKFORGE_MASTER": cluster, "PYSPARK_PYTHON": sys.executable,
           "SPARKFORGE_LOG_LEVEL": "WARNING"}
    proc = subprocess.run(
        [sys.executable, "-m", "sparkforge", "pipeline", "--config",
         "conf/tabular_classification.yaml", "--set", f"data.input={tmp_path / 'in.csv'}",
         "--set", "data.label_column=y", "--set", f"output.dir={out}",
         "--set", "train.local_mode=false", "--set", "train.epochs=3",
         "--set", "spark.conf.spark.executor.cores=2"],
        capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-5000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["variants"]["fp32"]["accuracy"] > 0.9
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["train"]["local_mode"] is False
    assert manifest["score"]["rows_in"] == n
