"""The standalone cluster (a master and two 1-core workers on 127.0.0.1) and one tiny
tabular run trained on it, shared by every test in tests/cluster.

The cluster comes from scripts/cluster.py, the code behind ``make cluster-up``: a cluster
that ``make cluster-up`` left running in ``.cluster/`` is reused (two 1-core workers),
otherwise the session starts its own in a temporary folder and stops it at the end.

Each Spark application here is a subprocess (the CLI, or run_stages.py when a test hook
is needed): this pytest process may already hold the local ``spark`` fixture's session,
and a process has one SparkContext.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from _cluster_helpers import (
    HERE,
    N_ROWS,
    PUBLISHED_DATE,
    ROOT,
    SPARK_CONF,
    SharedRun,
    cli_env,
    event_log_conf,
    write_config,
)
from scripts import cluster as sc

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
def shared_run(cluster: sc.Cluster, tmp_path_factory: pytest.TempPathFactory) -> SharedRun:
    """preprocess -> train -> compress -> score -> evaluate of 400 generated rows on the
    cluster, in one application. Training runs its 2 ranks as barrier tasks on the two
    workers (train.local_mode=false), and rank 1 dies once at epoch 1, step 2: with
    train.max_restarts=1 the barrier stage is relaunched from epoch 0's checkpoint."""
    tmp = tmp_path_factory.mktemp("shared_run")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(N_ROWS, 2))
    data = tmp / "in.csv"
    pd.DataFrame({"id": [f"r{i:04d}" for i in range(N_ROWS)], "a": x[:, 0], "b": x[:, 1],
                  "c": rng.choice(["u", "v", "w"], N_ROWS),
                  "y": np.where(x[:, 0] + x[:, 1] > 0, "p", "q")}).to_csv(data, index=False)
    out = tmp / "run"
    config = write_config(
        tmp / "run.yaml", ROOT / "conf" / "tabular_classification.yaml", SPARK_CONF,
        data={"input": str(data), "label_column": "y", "id_column": "id"},
        train={"local_mode": False, "epochs": 2, "batch_size": 16, "lr": 0.02,
               "max_restarts": 1},
        output={"dir": str(out)}, run={"date": PUBLISHED_DATE})
    failed = tmp / "rank1-failed"
    hooks = TrainHooks(fail_at=FailAt(rank=1, epoch=1, step=2, once_file=str(failed)),
                       trace_dir=str(tmp / "trace"))
    summary = tmp / "summary.json"
    # the event log only for this application (the tests' runs extend run.yaml)
    logged = write_config(tmp / "run-logged.yaml", config, event_log_conf(tmp / "events"))
    args = ["--config", str(logged), "--train-hooks", hooks.to_json(),
            "--summary", str(summary)]
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(HERE / "run_stages.py"), *args],
                          capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env=cli_env(cluster))
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-6000:]}"
    return SharedRun(out=out, input=data, config=config,
                     summary=json.loads(summary.read_text()), trace=tmp / "trace",
                     failed_marker=failed, events=tmp / "events", seconds=seconds)
