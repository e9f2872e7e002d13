"""The standalone cluster (a master and two 1-core workers on 127.0.0.1) and one tiny
tabular run submitted to it by spark-submit, shared by every test in tests/cluster.

The cluster comes from scripts/cluster.py, the code behind ``make cluster-up``: a cluster
that ``make cluster-up`` left running in ``.cluster/`` is reused (two 1-core workers),
otherwise the session starts its own in a temporary folder and stops it at the end.

Each Spark application here is a subprocess (spark-submit, or the CLI): this pytest
process may already hold the local ``spark`` fixture's session, and a process has one
SparkContext.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cluster_helpers import (
    HERE,
    PUBLISHED_DATE,
    ROOT,
    SPARK_CONF,
    SharedRun,
    event_log_conf,
    spark_submit_cmd,
    submit_env,
    write_config,
    write_input,
)
from scripts import cluster as sc
from scripts import package

from sparkforge.train.hooks import FailAt, TrainHooks


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sc.Cluster]:
    running = sc.load(ROOT / ".cluster")
    if running is not None and len(running.workers) == 2 and running.cores == 1:
        running.ensure_workers()
        yield running
        return
    c = sc.start(tmp_path_factory.mktemp("cluster"), workers=2, cores=1, memory="1g")
    try:
        yield c
    finally:
        sc.stop(c.state_dir)


@pytest.fixture(autouse=True)
def _both_workers(cluster: sc.Cluster) -> None:
    """A test that killed a worker may leave it dead: start it again before the next."""
    cluster.ensure_workers()


@pytest.fixture(scope="session")
def zip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dist/sparkforge.zip as ``make package`` builds it (scripts/package.py)."""
    return package.build_zip(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def shared_run(cluster: sc.Cluster, zip_path: Path,
               tmp_path_factory: pytest.TempPathFactory) -> SharedRun:
    """preprocess -> train -> compress -> score -> evaluate of 406 generated rows (6 of
    them bad) on the cluster, in one application submitted the README's way: spark-submit
    --master spark://... --properties-file conf/spark/standalone.conf --py-files
    sparkforge.zip (the driver and the executors import sparkforge from the zip). The
    application is run_stages.py, spark_jobs/pipeline.py's stages in the same order with
    training's test hooks installed: its 2 ranks run as barrier tasks on the two workers
    (train.local_mode=false), and rank 1 dies once at epoch 1, step 2: with
    train.max_restarts=1 the barrier stage is relaunched from epoch 0's checkpoint."""
    tmp = tmp_path_factory.mktemp("shared_run")
    data = tmp / "in.csv"
    good, bad = write_input(data)
    out = tmp / "run"
    config = write_config(
        tmp / "run.yaml", ROOT / "conf" / "tabular_classification.yaml", SPARK_CONF,
        data={"input": str(data), "label_column": "y", "id_column": "id"},
        train={"local_mode": False, "epochs": 2, "batch_size": 16, "lr": 0.02,
               "max_restarts": 1},
        compress={"variants": ["int8_dynamic"]},
        output={"dir": str(out)}, run={"date": PUBLISHED_DATE})
    failed = tmp / "rank1-failed"
    hooks = TrainHooks(fail_at=FailAt(rank=1, epoch=1, step=2, once_file=str(failed)),
                       trace_dir=str(tmp / "trace"))
    summary = tmp / "summary.json"
    # the event log only for this application (the tests' runs extend run.yaml)
    logged = write_config(tmp / "run-logged.yaml", config, event_log_conf(tmp / "events"))
    cmd = spark_submit_cmd(cluster.master_url, zip_path, HERE / "run_stages.py",
                           "--config", str(logged), "--train-hooks", hooks.to_json(),
                           "--summary", str(summary))
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp,
                          env=submit_env())
    seconds = time.monotonic() - t0
    said = "\n".join(line for line in proc.stderr.splitlines() if "sparkforge" in line)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{said[-4000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    return SharedRun(out=out, input=data, good_ids=good, bad_ids=bad, config=config,
                     summary=json.loads(summary.read_text()), trace=tmp / "trace",
                     failed_marker=failed, events=tmp / "events", seconds=seconds,
                     stderr=proc.stderr)
