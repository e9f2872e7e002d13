"""Faults while scoring on the standalone cluster: a worker JVM killed mid-job, and the
driver killed between staging and publishing. Both score the shared run's model on its
input; ids are counted from the input file itself."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from _cluster_helpers import (
    HERE,
    PUBLISHED_DATE,
    ROOT,
    SharedRun,
    cli_env,
    event_log_conf,
    input_ids,
    published_ids,
    read_events,
    write_config,
)
from scripts.cluster import Cluster

SCORE = [sys.executable, "-m", "sparkforge", "score"]


def _selected(run: SharedRun) -> str:
    return str(json.loads((run.out / "compressed" / "selection.json").read_text())["selected"])


def _check_published(run: SharedRun, date: str) -> dict:  # type: ignore[type-arg]
    """Every valid input id scored exactly once by the selected model, the bad ones
    quarantined; the counts add up."""
    ids = input_ids(run.input)
    part = run.out / "scores" / f"run_date={date}"
    assert (part / "_SUCCESS").exists()
    assert Counter(published_ids(part, _selected(run))) == Counter(run.good_ids)
    manifest = json.loads((part / "_run_manifest.json").read_text())
    assert manifest["rows_in"] == len(ids)
    assert manifest["rows_scored"] == len(run.good_ids)
    assert manifest["rows_quarantined"] == len(run.bad_ids)
    return manifest  # type: ignore[no-any-return]


def test_worker_killed_while_scoring_completes_through_task_retry(
        shared_run: SharedRun, cluster: Cluster, tmp_path: Path) -> None:
    """SIGKILL one worker's JVM while a Python task of the score job's write runs on it.

    Python tasks wait at a gate (gated_daemon.py) until the test lets them go: tasks of
    the jobs before the write are released one by one; the first task seen once the
    staging folder exists is held, its worker killed, then every task released. Its
    executor exits with the worker, the task is lost and rerun on the other executor."""
    date = "2026-01-02"
    gate, events = tmp_path / "gate", tmp_path / "events"
    gate.mkdir()
    config = write_config(tmp_path / "score.yaml", shared_run.config, {
        "spark.python.daemon.module": "gated_daemon",
        # replaces the workers' PYTHONPATH in the executors: keep this checkout's lib
        "spark.executorEnv.PYTHONPATH": os.pathsep.join([str(ROOT / "lib"), str(HERE)]),
        "spark.executorEnv.SPARKFORGE_TEST_GATE": str(gate),
        **event_log_conf(events)}, run={"date": date})
    args = ["--config", str(config)]
    staging_root = shared_run.out / "scores" / "_staging"
    t0 = time.monotonic()
    log = tmp_path / "score.log"
    with open(log, "w") as logf:  # a file, not a pipe nobody reads while the test waits
        proc = subprocess.Popen([*SCORE, *args], stdout=logf, stderr=subprocess.STDOUT,
                                cwd=ROOT, env=cli_env(cluster))
    victim, killed_at, seen = None, 0.0, set()
    try:
        while victim is None and proc.poll() is None and time.monotonic() - t0 < 600:
            for marker in sorted(gate.glob("started-*.json")):
                if marker.name in seen:
                    continue
                seen.add(marker.name)
                if any(staging_root.glob(f"run_date={date}.*")):
                    victim = cluster.worker_of(json.loads(marker.read_text())["cwd"])
                    assert victim is not None, f"task outside the workers: {marker.read_text()}"
                    cluster.kill_worker(victim.name)
                    killed_at = time.time()
                    break
                (gate / f"release-{marker.name}").touch()
            time.sleep(0.05)
    finally:
        (gate / "open").touch()
        proc.wait(timeout=600)
    elapsed = time.monotonic() - t0
    output = log.read_text()[-6000:]
    assert victim is not None, f"no Python task started after staging began\n{output}"
    assert proc.returncode == 0, f"exit {proc.returncode}\n{output}"
    _check_published(shared_run, date)

    # The kill hit a running task: it ended in ExecutorLostFailure and a later attempt of
    # the same task succeeded.
    ends = [e for e in read_events(events) if e["Event"] == "SparkListenerTaskEnd"]
    lost = {(e["Stage ID"], e["Task Info"]["Index"]) for e in ends
            if e["Task End Reason"]["Reason"] == "ExecutorLostFailure"}
    assert lost, "no task was lost with the worker"
    retried = [e for e in ends if (e["Stage ID"], e["Task Info"]["Index"]) in lost
               and e["Task End Reason"]["Reason"] == "Success"]
    assert {(e["Stage ID"], e["Task Info"]["Index"]) for e in retried} == lost
    recovered_s = max(e["Task Info"]["Finish Time"] for e in retried) / 1000 - killed_at
    print(f"\nworker kill: {len(lost)} task(s) lost, rerun; recovered {recovered_s:.1f}s "
          f"after the kill; score run {elapsed:.0f}s")


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_driver_killed_between_staging_and_publish_leaves_the_published_run(
        shared_run: SharedRun, cluster: Cluster) -> None:
    """SIGKILL the driver at score.before_publish (sparkforge.faults): the staged output
    is complete, the partition published before is untouched, and a following run of the
    same date publishes every id once."""
    part = shared_run.out / "scores" / f"run_date={PUBLISHED_DATE}"
    before = _snapshot(part)
    assert "_SUCCESS" in before
    old_manifest = json.loads((part / "_run_manifest.json").read_text())
    args = ["--config", str(shared_run.config)]  # its run.date: PUBLISHED_DATE
    killed = subprocess.run(
        [*SCORE, *args], capture_output=True, text=True, timeout=600, cwd=ROOT,
        env=cli_env(cluster, SPARKFORGE_FAULTS="score.before_publish=kill"))
    assert killed.returncode == -signal.SIGKILL, \
        f"exit {killed.returncode}: the fault point did not fire\n{killed.stderr[-4000:]}"
    staged = list((shared_run.out / "scores" / "_staging").glob(f"run_date={PUBLISHED_DATE}.*"))
    assert len(staged) == 1
    assert (staged[0] / "_run_manifest.json").exists()  # killed after staging completed
    assert _snapshot(part) == before

    t0 = time.monotonic()
    again = subprocess.run([*SCORE, *args], capture_output=True, text=True, timeout=600,
                           cwd=ROOT, env=cli_env(cluster))
    assert again.returncode == 0, f"exit {again.returncode}\n{again.stderr[-6000:]}"
    manifest = _check_published(shared_run, PUBLISHED_DATE)
    assert manifest["started_at"] > old_manifest["started_at"]
    left = [p.name for p in (shared_run.out / "scores" / "_staging").glob("*")]
    print(f"\ndriver kill: published partition unchanged; rerun {time.monotonic() - t0:.0f}s; "
          f"staging left behind: {left}")
