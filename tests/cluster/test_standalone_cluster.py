"""A training rank killed mid-epoch on a real Spark standalone cluster (a master and two
1-core workers on 127.0.0.1, started by the session fixture).

The shared run (conftest.shared_run, submitted by spark-submit; its outcome is checked
in test_spark_submit.py) loses rank 1 at epoch 1, step 2 and is relaunched from epoch 0's
checkpoint (train.max_restarts=1).
"""

from __future__ import annotations

import json

import pandas as pd
from _cluster_helpers import SharedRun, read_events

from sparkforge.jobs.train import checkpoint_epochs
from sparkforge.models import build_model, load_weights


def test_killed_rank_resumes_from_the_last_checkpoint_across_two_workers(
        shared_run: SharedRun) -> None:
    """Rank 1 (a barrier task on one worker) died at epoch 1, step 2; the relaunched
    stage continued from epoch 0's checkpoint instead of starting over."""
    out = shared_run.out
    train = shared_run.summary["train"]
    assert shared_run.failed_marker.exists()  # the injected failure fired
    assert train["restarts"] == 1
    assert train["resumed_from_epoch"] == 1
    history = json.loads((out / "model" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    assert train["history"] == history
    assert checkpoint_epochs(out) == [1]
    load_weights(build_model(json.loads((out / "model" / "model.json").read_text())),
                 out / "model" / "model.safetensors")  # strict: every tensor present

    # Epoch 0 ran once, before the failure; epoch 1 ran (again) after it, on both ranks,
    # over every train id (read from the preprocessed split, not from the trainer).
    failed_at = shared_run.failed_marker.stat().st_mtime
    for rank in (0, 1):
        assert (shared_run.trace / f"epoch0-rank{rank}.json").stat().st_mtime < failed_at
        assert (shared_run.trace / f"epoch1-rank{rank}.json").stat().st_mtime > failed_at
    train_ids = set(pd.read_parquet(out / "preprocessed" / "split=train", columns=["id"])["id"])
    traced = set()
    for rank in (0, 1):
        traced |= set(json.loads((shared_run.trace / f"epoch1-rank{rank}.json").read_text())
                      ["ids"])
    assert traced == train_ids

    # Both attempts ran as 2-task barrier stages with one task on each worker's executor
    # (1-core workers: 2 concurrent tasks need both); the first attempt lost a task.
    events = read_events(shared_run.events)
    barrier = sorted({e["Stage Info"]["Stage ID"] for e in events
                      if e["Event"] == "SparkListenerStageSubmitted"
                      and any(r.get("Barrier") for r in e["Stage Info"]["RDD Info"])})
    assert len(barrier) == 2, barrier  # the failed launch and the relaunch
    ends = [e for e in events if e["Event"] == "SparkListenerTaskEnd"]
    first, second = ([e for e in ends if e["Stage ID"] == s] for s in barrier)
    assert any(e["Task End Reason"]["Reason"] != "Success" for e in first)
    assert [e["Task End Reason"]["Reason"] for e in second] == ["Success"] * 2
    assert len({e["Task Info"]["Executor ID"] for e in second}) == 2
