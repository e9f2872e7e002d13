"""MLflow tracking (``tracking.mlflow: true``), read back through ``MlflowClient``.

Reuses conftest's ``notebook_run`` (the four stage notebooks with tracking on, then a
dated ``sparkforge score`` from the command line): no run of its own; the shared run
takes about 2.5 min, these checks seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _notebook_run import RUN_DATE, NotebookRun
from mlflow.tracking import MlflowClient  # the [mlflow] extra, installed by `make setup`


@pytest.fixture(autouse=True)
def _file_store(monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow 3 opens its file store (sparkforge's local default) only with this set;
    # sparkforge.tracking sets it in the process that logs, this test reads in another.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


def _client(run: NotebookRun) -> tuple[MlflowClient, dict]:
    rec = run.manifest()["tracking"]
    # the default store: a local one under output.dir
    assert rec["uri"] == (run.out / "mlruns").resolve().as_uri()
    return MlflowClient(tracking_uri=rec["uri"]), rec


def _children(client: MlflowClient, rec: dict) -> dict[str, object]:
    runs = client.search_runs([rec["experiment_id"]],
                              f"tags.mlflow.parentRunId = '{rec['run_id']}'")
    by_name: dict[str, object] = {}
    for r in runs:
        assert r.info.run_name not in by_name, f"two nested runs named {r.info.run_name}"
        by_name[r.info.run_name] = r
    return by_name


def test_one_parent_run_with_the_config_and_a_nested_run_per_stage(
        notebook_run: NotebookRun) -> None:
    client, rec = _client(notebook_run)
    parent = client.get_run(rec["run_id"])
    params = parent.data.params
    # the notebooks' widget overrides reached the logged config: notebook 1's on the
    # parent, each stage notebook's own (epochs, variants) on its stage's run
    assert params["train.hidden_dim"] == "16"
    assert params["output.dir"] == "runs/nb"
    assert params["data.input"] == "data/adult_small.csv"
    children = _children(client, rec)
    assert children["train"].data.params["train.epochs"] == "2"
    assert children["compress"].data.params["compress.variants"] == "['int8_dynamic']"
    assert set(children) == {"preprocess", "train", "compress", "score", "evaluate",
                             f"score run_date={RUN_DATE}"}
    assert all(r.info.status == "FINISHED" for r in children.values())
    pre = notebook_run.manifest()["preprocess"]
    m = children["preprocess"].data.metrics
    assert m["rows_in"] == pre["rows_in"] == 3000
    assert m["rows_kept"] == pre["rows_kept"]
    assert m["rows_per_split.train"] == pre["rows_per_split"]["train"]


def test_per_epoch_metrics_equal_the_manifest_history(notebook_run: NotebookRun) -> None:
    client, rec = _client(notebook_run)
    train_run = _children(client, rec)["train"]
    history = notebook_run.manifest()["train"]["history"]
    assert len(history) == 2
    for key in ("train_loss", "val_loss", "val_metric", "lr"):
        logged = sorted((m.step, m.value) for m in
                        client.get_metric_history(train_run.info.run_id, key))
        assert logged == [(h["epoch"], pytest.approx(h[key])) for h in history], key
    assert train_run.data.metrics["kept_epoch"] == notebook_run.manifest()["train"]["kept_epoch"]


def _artifacts(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    found: set[str] = set()
    for a in client.list_artifacts(run_id, path or None):
        found |= _artifacts(client, run_id, a.path) if a.is_dir else {a.path}
    return found


def test_onnx_variants_with_their_gate_figures(notebook_run: NotebookRun) -> None:
    client, rec = _client(notebook_run)
    run = _children(client, rec)["compress"]
    selection = json.loads((notebook_run.out / "compressed" / "selection.json").read_text())
    for name, v in selection["variants"].items():
        for key in ("gate_metric", "gate_metric_drop", "file_bytes", "latency_ms_b1024"):
            assert run.data.metrics[f"{name}.{key}"] == pytest.approx(v[key]), (name, key)
        assert run.data.tags[f"{name}.decision"] == v["decision"]
    assert run.data.tags["selected"] == selection["selected"]
    files = _artifacts(client, run.info.run_id)
    assert files == {f"onnx/{n}/model.onnx" for n in selection["paths"]} | {"selection.json"}
    # the logged ONNX file is the one the gate measured, byte for byte
    local = Path(client.download_artifacts(run.info.run_id, "onnx/fp32/model.onnx",
                                           str(notebook_run.cwd)))
    assert local.read_bytes() == (notebook_run.out / selection["paths"]["fp32"]).read_bytes()


def test_evaluation_and_dated_score_are_logged(notebook_run: NotebookRun) -> None:
    client, rec = _client(notebook_run)
    children = _children(client, rec)
    ev = children["evaluate"]
    assert _artifacts(client, ev.info.run_id) == {"metrics.json", "report.html"}
    metrics = json.loads((notebook_run.out / "metrics.json").read_text())
    for name, m in metrics["variants"].items():
        assert ev.data.metrics[f"{name}.accuracy"] == pytest.approx(m["accuracy"])
    selected = metrics["selected"]
    parent = client.get_run(rec["run_id"])
    assert parent.data.metrics["test.accuracy"] == pytest.approx(
        metrics["variants"][selected]["accuracy"])
    dated = children[f"score run_date={RUN_DATE}"]
    sched = notebook_run.manifest()["scheduled_score"]
    assert dated.data.tags["sparkforge.run_date"] == RUN_DATE
    assert dated.data.metrics["rows_in"] == sched["rows_in"] == 500
    assert dated.data.metrics["rows_scored"] == sched["rows_scored"]
    for col, psi in sched["drift"]["psi"].items():
        assert dated.data.metrics[f"drift.psi.{col}"] == pytest.approx(psi)
