"""sparkforge.tracking against a real local MLflow store (no Spark): a run directory's
manifest, written here the way the stages write it, logged stage by stage and read back
through MlflowClient. About 5 s (mlflow's import). The e2e test_tracking.py does the
same on a real pipeline run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sparkforge.artifacts import update_manifest
from sparkforge.config import load_config
from sparkforge.tracking import SECTION, log_stage

HISTORY = [{"epoch": 0, "train_loss": 0.7, "val_loss": 0.6, "lr": 1e-3, "metric_name": "acc"},
           {"epoch": 1, "train_loss": 0.5, "val_loss": 0.55, "lr": 0.0, "metric_name": "acc"}]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    update_manifest(out, "preprocess", {"rows_in": 10, "rows_kept": 9, "rows_quarantined": 1,
                                        "quarantine_reasons": {"bad_type:a (b)": 1},
                                        "rows_per_split": {"train": 7, "val": 1, "test": 1}})
    update_manifest(out, "train", {"history": HISTORY, "kept_epoch": 1, "stop_reason": "done"})
    onnx = out / "compressed" / "fp32" / "model.onnx"
    onnx.parent.mkdir(parents=True)
    onnx.write_bytes(b"onnx bytes")
    (out / "compressed" / "selection.json").write_text("{}")
    update_manifest(out, "compress", {"selected": "fp32", "paths": {
        "fp32": "compressed/fp32/model.onnx"}, "variants": {"fp32": {
            "gate_metric": 0.9, "file_bytes": 10, "decision": "selected: the reference"}}})
    (out / "metrics.json").write_text(json.dumps({"selected": "fp32", "variants": {
        "fp32": {"accuracy": 0.8, "n_rows": 5, "confusion_matrix": [[1, 2], [3, 4]]}}}))
    (out / "report.html").write_text("<html></html>")
    update_manifest(out, "evaluate", {"metrics": "metrics.json", "selected": "fp32"})
    return out


def test_stages_nest_under_one_parent_with_their_figures(run_dir: Path) -> None:
    cfg = load_config(None, ["task=tabular_classification", f"output.dir={run_dir}",
                             "tracking.mlflow=true", "tracking.experiment=unit"])
    ids = {s: log_stage(cfg, s) for s in ("preprocess", "train", "compress", "evaluate")}
    failed = log_stage(cfg, "score", error="RuntimeError: executor lost")
    rec = json.loads((run_dir / "manifest.json").read_text())[SECTION]
    c = MlflowClient(rec["uri"])
    parent = c.get_run(rec["run_id"])
    assert parent.data.params["output.dir"] == str(run_dir)
    assert parent.data.params["tracking.experiment"] == "unit"
    assert parent.info.status == "FAILED"  # the last stage failed
    assert parent.data.metrics["test.accuracy"] == 0.8
    for run_id in [*ids.values(), failed]:
        assert c.get_run(run_id).data.tags["mlflow.parentRunId"] == rec["run_id"]
    pre = c.get_run(ids["preprocess"]).data.metrics
    assert pre["rows_in"] == 10
    assert pre["rows_per_split.train"] == 7
    assert pre["quarantine_reasons.bad_type:a _b_"] == 1
    assert c.get_run(ids["train"]).data.params["train.epochs"] == "30"
    assert c.get_run(ids["preprocess"]).data.params["task"] == "tabular_classification"
    hist = c.get_metric_history(ids["train"], "train_loss")
    assert sorted((m.step, m.value) for m in hist) == [(0, 0.7), (1, 0.5)]
    comp = c.get_run(ids["compress"])
    assert comp.data.metrics["fp32.gate_metric"] == 0.9
    assert comp.data.tags["fp32.decision"] == "selected: the reference"
    assert [a.path for a in c.list_artifacts(ids["compress"], "onnx/fp32")] == [
        "onnx/fp32/model.onnx"]
    ev = c.get_run(ids["evaluate"])
    assert ev.data.metrics == {"fp32.accuracy": 0.8, "fp32.n_rows": 5.0}
    assert {a.path for a in c.list_artifacts(ids["evaluate"])} == {"metrics.json",
                                                                   "report.html"}
    bad = c.get_run(failed)
    assert bad.info.status == "FAILED"
    assert bad.data.tags["error"] == "RuntimeError: executor lost"


def test_a_new_preprocess_opens_a_new_parent_and_tracking_off_logs_nothing(
        run_dir: Path) -> None:
    cfg = load_config(None, ["task=tabular_classification", f"output.dir={run_dir}",
                             "tracking.mlflow=true"])
    log_stage(cfg, "preprocess")
    first = json.loads((run_dir / "manifest.json").read_text())[SECTION]["run_id"]
    log_stage(cfg, "train")
    assert json.loads((run_dir / "manifest.json").read_text())[SECTION]["run_id"] == first
    log_stage(cfg, "preprocess")
    assert json.loads((run_dir / "manifest.json").read_text())[SECTION]["run_id"] != first
    off = load_config(None, ["task=tabular_classification", f"output.dir={run_dir}"])
    assert log_stage(off, "train") is None
