"""Scheduled scoring on one small trained demo_tabular run (a sample of real UCI Adult):
the README's nightly commands as written, artifacts checked against the manifest, rows
in counted from the input, one run per date, the pipeline's evaluation scores kept apart,
idempotent reruns, incremental mode, quarantine, drift, one ONNX session per worker."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sparkforge.artifacts import ArtifactError, read_json
from sparkforge.config import Config, load_config
from sparkforge.datasets import write_adult, write_new_customers
from sparkforge.faults import ENV as FAULTS_ENV
from sparkforge.faults import InjectedFault
from sparkforge.infer.runs import RunLockedError, run_lock, score_target
from sparkforge.jobs import STAGES, stage_fn
from sparkforge.jobs import score as score_job
from sparkforge.jobs.evaluate import run_evaluate

ROOT = Path(__file__).resolve().parents[2]
LABEL = "income"


@dataclasses.dataclass(frozen=True)
class Demo:
    root: Path           # a working directory laid out like the repository: conf/, data/
    cfg: Config          # the training config (output.dir = root/runs/demo_tabular)
    pool: pd.DataFrame   # Adult rows the model was not trained on


@pytest.fixture(scope="module")
def trained(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """conf/demo_tabular.yaml trained once on 2000 Adult rows (2 epochs, int8_dynamic)."""
    from sparkforge.jobs import compress as compress_job

    root = tmp_path_factory.mktemp("demo")
    shutil.copytree(ROOT / "conf", root / "conf")
    src = root / "src"
    write_adult(src / "adult.csv")
    adult = pd.read_csv(src / "adult.csv", dtype=str, keep_default_na=False)
    order = np.random.default_rng(42).permutation(len(adult))
    adult.iloc[order[:2000]].to_csv(src / "train.csv", index=False)
    write_new_customers(root / "data" / "new_customers.csv")
    cfg = load_config(root / "conf" / "demo_tabular.yaml", [
        f"data.input={src / 'train.csv'}", f"output.dir={root / 'runs' / 'demo_tabular'}",
        "train.epochs=2", "train.num_processes=1", "compress.variants=[int8_dynamic]",
        "evaluate.baseline=false"])
    # Short latency loops: compress's timings play no part here.
    real_latency = compress_job._latency_ms
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compress_job, "_latency_ms", lambda path, feeds, batch, repeats, **_:
                   real_latency(path, feeds, min(batch, 64), 1, budget_s=0.0))
        for stage in STAGES[:3]:
            stage_fn(stage)(spark, cfg)
    # Rows whose categories the train split has seen: scored unless a test breaks them.
    pool = adult.iloc[order[2000:]]
    cats = read_json(cfg.out / "model" / "preprocessor.json")["categorical"]
    known = np.logical_and.reduce([pool[c].isin(v) for c, v in cats.items()])
    return Demo(root, cfg, pool[known].reset_index(drop=True))


@pytest.fixture(scope="module")
def demo(spark: Any, trained: Demo) -> Demo:
    """The trained run after the pipeline's own score and evaluate (eval_scores/)."""
    for stage in STAGES[3:]:
        stage_fn(stage)(spark, trained.cfg)
    return trained


def _with(cfg: Config, **kw: Any) -> Config:
    score = dataclasses.replace(cfg.score, **{k[6:]: v for k, v in kw.items()
                                              if k.startswith("score_")})
    run = dataclasses.replace(cfg.run, **{k[4:]: v for k, v in kw.items()
                                          if k.startswith("run_")})
    return dataclasses.replace(cfg, score=score, run=run)


def _csv_rows(path: Path) -> int:
    """Data rows of a CSV file, counted with the csv module (header and blank lines out)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return sum(1 for row in csv.reader(fh) if row) - 1


def _published(cfg: Config, date: str) -> pd.DataFrame:
    return pd.read_parquet(cfg.out / "scores" / f"run_date={date}")


def _input(demo: Demo, path: Path, n: int, start: int = 0, labeled: bool = True) -> Path:
    t = demo.pool.iloc[start:start + n]
    (t if labeled else t.drop(columns=[LABEL])).to_csv(path, index=False)
    return path


def _cli(spark: Any, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """``sparkforge ARGS`` in this process, on the test session (which it must not stop)."""
    import sparkforge.spark.session as session
    from sparkforge import cli

    monkeypatch.setattr(session, "get_session", lambda *_a, **_k: spark)
    monkeypatch.setattr(spark, "stop", lambda: None)
    return cli.main(list(args))


def test_demo_data_writes_the_unlabeled_table_the_readme_scores(tmp_path: Path) -> None:
    n = write_new_customers(tmp_path / "new_customers.csv")
    with open(tmp_path / "new_customers.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert LABEL not in header
    assert "age" in header
    assert n == _csv_rows(tmp_path / "new_customers.csv") > 10_000


def test_training_recorded_the_data_settings_scoring_reuses(trained: Demo) -> None:
    recorded = read_json(trained.cfg.out / "manifest.json")["artifacts"]
    assert "model/config.json" in recorded
    assert read_json(trained.cfg.out / "model" / "config.json")["data"]["label_column"] == LABEL


def test_every_loaded_artifact_is_recorded_by_its_stage(demo: Demo) -> None:
    out = demo.cfg.out
    recorded = read_json(out / "manifest.json")["artifacts"]
    selection = read_json(out / "compressed" / "selection.json")
    needed = ["model/labels.json", "model/preprocessor.json", "model/reference.json",
              "model/config.json", "model/model.safetensors", "model/model.json",
              f"model/score_reference-{selection['selected']}.json",
              "eval_scores/_run_manifest.json", *selection["paths"].values()]
    assert [r for r in needed if r not in recorded] == []


# ---------------------------------------------------------------------------
# The README's nightly example, as written


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Scheduled scoring", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README's Scheduled scoring section has no bash block"
    return [c.strip() for c in block.group(1).replace("\\\n", " ").splitlines() if c.strip()]


def test_readme_scheduled_scoring_runs_as_written(demo: Demo) -> None:
    """New unlabeled data, a date, then evaluate: each command exits 0, only the run
    directory and the new table are needed (the training CSV is not in data/), the
    counts add up to the rows of the file, and the pipeline's metrics stay as they were."""
    commands = _readme_commands()
    assert [c.split()[:2] for c in commands] == [["sparkforge", "score"],
                                                 ["sparkforge", "evaluate"]]
    out = demo.cfg.out
    pipeline_metrics = (out / "metrics.json").read_bytes()
    eval_scores = sorted(p.name for p in (out / "eval_scores").iterdir())
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARKFORGE_LOG_LEVEL": "WARNING",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    assert not (demo.root / "data" / "adult.csv").exists()
    for command in commands:
        proc = subprocess.run(shlex.split(command), cwd=demo.root, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        assert "Traceback" not in proc.stderr
    date = re.search(r"run\.date=(\S+)", commands[0]).group(1)  # type: ignore[union-attr]
    n_file = _csv_rows(demo.root / "data" / "new_customers.csv")
    run = read_json(out / "scores" / f"run_date={date}" / "_run_manifest.json")
    assert run["rows_in"] == n_file == run["rows_scored"] + run["rows_quarantined"]
    scores = _published(demo.cfg, date)
    selected = scores[scores["model_variant"] == run["model_variant"]]
    assert len(selected) == run["rows_scored"]
    assert selected["id"].is_unique
    assert scores["label"].isna().all()
    metrics = read_json(out / "evaluations" / f"run_date={date}" / "metrics.json")
    assert metrics["variants"] == {}
    assert metrics["rows_labeled"] == 0
    assert metrics["run"]["rows_in"] == n_file
    assert set(metrics["drift"]["psi"]) >= {"age", "workclass", "score"}
    assert sum(metrics["prediction_distribution"].values()) == run["rows_scored"]
    assert (out / "evaluations" / f"run_date={date}" / "report.html").exists()
    # the pipeline's evaluation is untouched by the nightly run
    assert (out / "metrics.json").read_bytes() == pipeline_metrics
    assert sorted(p.name for p in (out / "eval_scores").iterdir()) == eval_scores


def test_todays_nightly_run_leaves_the_pipelines_evaluation_alone(spark: Any, demo: Demo,
                                                                 tmp_path: Path) -> None:
    """The pipeline scores into eval_scores/; a dated run for today (the day the pipeline
    ran) goes to scores/run_date=today/, and evaluate without a date still reads the
    pipeline's scores."""
    today = dt.datetime.now(dt.UTC).date().isoformat()
    before = read_json(demo.cfg.out / "metrics.json")
    inp = _input(demo, tmp_path / "today.csv", 150, labeled=False)
    score_job.run_score(spark, _with(demo.cfg, score_input=str(inp), run_date=today))
    assert len(_published(demo.cfg, today)) >= 150
    after = run_evaluate(spark, demo.cfg)
    assert after["scores"] == "eval_scores"
    assert after["variants"].keys() == before["variants"].keys()
    for v, m in after["variants"].items():
        assert m["n_rows"] == before["variants"][v]["n_rows"]
        assert m["accuracy"] == pytest.approx(before["variants"][v]["accuracy"], abs=1e-12)


def test_score_needs_only_the_run_directory_and_the_new_table(spark: Any, demo: Demo,
                                                              tmp_path: Path) -> None:
    """A generic config without data.input (and with the wrong label column) scores with
    the training's data settings, recorded in model/config.json."""
    from sparkforge.data.preflight import check_inputs

    inp = _input(demo, tmp_path / "new.csv", 120, start=200)
    cfg = load_config(ROOT / "conf" / "tabular_classification.yaml", [
        f"output.dir={demo.cfg.out}", f"score.input={inp}", "run.date=2026-06-01"])
    assert cfg.data.input == ""
    assert cfg.data.label_column == "label"
    check_inputs(cfg, "score")
    r = score_job.run_score(spark, cfg)
    assert r["rows_in"] == 120 == r["rows_scored"] + r["rows_quarantined"]
    scores = _published(cfg, "2026-06-01")
    assert scores["label"].notna().all()          # read from `income`, the training's label
    m = run_evaluate(spark, cfg)
    assert m["variants"][r["model_variant"]]["n_rows"] == m["rows_labeled"] > 0


# ---------------------------------------------------------------------------
# Artifacts checked against the manifest


def _swap_labels(p: Path) -> None:
    p.write_text(json.dumps(json.loads(p.read_text())[::-1]))


def _edit_json(p: Path) -> None:
    doc = json.loads(p.read_text())
    doc["_edited"] = True
    p.write_text(json.dumps(doc))


def _append_byte(p: Path) -> None:
    with open(p, "ab") as fh:
        fh.write(b"\0")


TAMPER = {
    "model/labels.json": _swap_labels,
    "model/preprocessor.json": _edit_json,
    "model/reference.json": _edit_json,
    "model/config.json": _edit_json,
    "compressed/fp32/model.onnx": _append_byte,
    "compressed/int8_dynamic/model.onnx": _append_byte,
    "compressed/selection.json": _edit_json,
    "model/score_reference-{selected}.json": _edit_json,
}


@pytest.mark.parametrize("rel", list(TAMPER))
def test_a_changed_artifact_is_refused(spark: Any, demo: Demo, tmp_path: Path,
                                       rel: str) -> None:
    out = demo.cfg.out
    selected = read_json(out / "compressed" / "selection.json")["selected"]
    path = out / rel.format(selected=selected)
    original = path.read_bytes()
    inp = _input(demo, tmp_path / "in.csv", 60, labeled=False)
    cfg = _with(demo.cfg, score_input=str(inp), run_date="2026-07-01")
    TAMPER[rel](path)
    try:
        with pytest.raises(ArtifactError) as e:
            score_job.run_score(spark, cfg)
    finally:
        path.write_bytes(original)
    assert path.name in str(e.value)
    assert re.search(r"rerun|restore", str(e.value))
    assert not (out / "scores" / "run_date=2026-07-01").exists()


def test_swapped_labels_exit_2_before_scoring(spark: Any, demo: Demo, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Swapping model/labels.json's two entries used to flip every prediction, exit 0."""
    labels = demo.cfg.out / "model" / "labels.json"
    original = labels.read_bytes()
    inp = _input(demo, tmp_path / "in.csv", 40)
    _swap_labels(labels)
    try:
        code = _cli(spark, monkeypatch, "score", "--config",
                    str(demo.root / "conf" / "demo_tabular.yaml"),
                    "--set", f"output.dir={demo.cfg.out}", "--set", f"score.input={inp}",
                    "--set", "run.date=2026-07-02")
    finally:
        labels.write_bytes(original)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "labels.json" in err
    assert "rerun preprocess" in err
    assert "Traceback" not in err
    assert not (demo.cfg.out / "scores" / "run_date=2026-07-02").exists()


def test_evaluate_refuses_a_changed_run_manifest(spark: Any, demo: Demo,
                                                 tmp_path: Path) -> None:
    inp = _input(demo, tmp_path / "in.csv", 50)
    cfg = _with(demo.cfg, score_input=str(inp), run_date="2026-07-03")
    score_job.run_score(spark, cfg)
    rm = cfg.out / "scores" / "run_date=2026-07-03" / "_run_manifest.json"
    _edit_json(rm)
    with pytest.raises(ArtifactError, match=r"_run_manifest\.json"):
        run_evaluate(spark, cfg)


# ---------------------------------------------------------------------------
# Rows in, counted from the input


def test_rows_in_is_counted_from_the_input_file(spark: Any, demo: Demo, tmp_path: Path) -> None:
    t = demo.pool.iloc[300:500].copy()
    t.iloc[:7, t.columns.get_loc(LABEL)] = "maybe"          # a label never seen: quarantined
    t.iloc[7:12, t.columns.get_loc("age")] = "forty"         # a bad number: quarantined
    t.iloc[12:15, t.columns.get_loc("workclass")] = "Martian"  # unseen: a hashed bucket
    inp = tmp_path / "odd.csv"
    t.to_csv(inp, index=False)
    n_file = _csv_rows(inp)
    r = score_job.run_score(spark, _with(demo.cfg, score_input=str(inp), run_date="2027-02-01"))
    assert r["rows_in"] == n_file == 200
    assert r["quarantine_reasons"] == {"unseen_label": 7, "bad_type:age": 5}
    scores = _published(demo.cfg, "2027-02-01")
    q = pd.read_parquet(demo.cfg.out / "quarantine" / "score" / "run_date=2027-02-01")
    assert set(q["stage"]) == {"score"}
    selected = scores[scores["model_variant"] == r["model_variant"]]
    assert len(selected) + len(q) == n_file
    assert selected["id"].is_unique
    # Each quarantined row's record is the input line, every column as written (a
    # missing value is left out), read here with the csv module: the numeric columns too,
    # which scoring parses early and does not carry to the end as text.
    with inp.open(newline="") as fh:
        lines = list(csv.DictReader(fh))
    bad = [row for row in lines if row[LABEL] == "maybe" or row["age"] == "forty"]
    expected = sorted(json.dumps({k: v for k, v in row.items() if v != ""}, sort_keys=True)
                      for row in bad)
    assert sorted(json.dumps(json.loads(x), sort_keys=True) for x in q["raw"]) == expected


def test_a_lost_row_fails_the_run_and_publishes_nothing(spark: Any, demo: Demo, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """rows_in used to be scored + quarantined, so a row lost on the way was invisible."""
    inp = _input(demo, tmp_path / "in.csv", 80, start=600)
    cfg = _with(demo.cfg, score_input=str(inp), run_date="2027-02-02")
    real = score_job.prepare

    def lossy(*a: Any, **k: Any) -> Any:
        p = real(*a, **k)
        return dataclasses.replace(p, kept=p.kept.orderBy("id").offset(1))

    monkeypatch.setattr(score_job, "prepare", lossy)
    with pytest.raises(score_job.RowCountError, match="80 rows read"):
        score_job.run_score(spark, cfg)
    assert not (cfg.out / "scores" / "run_date=2027-02-02").exists()


# ---------------------------------------------------------------------------
# One run per date, crashes, the fault point


def test_a_second_run_for_the_same_date_is_refused_naming_the_first(
        spark: Any, demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    inp = _input(demo, tmp_path / "in.csv", 60, start=700)
    cfg = _with(demo.cfg, score_input=str(inp), run_date="2027-04-01")
    with run_lock(score_target(cfg)) as holder:
        with pytest.raises(RunLockedError, match=f"pid {holder['pid']} on host"):
            score_job.run_score(spark, cfg)
        code = _cli(spark, monkeypatch, "score", "--config",
                    str(demo.root / "conf" / "demo_tabular.yaml"),
                    "--set", f"output.dir={cfg.out}", "--set", f"score.input={inp}",
                    "--set", "run.date=2027-04-01")
        assert code == 2
        assert f"pid {holder['pid']}" in capsys.readouterr().err
    assert not (cfg.out / "scores" / "run_date=2027-04-01").exists()
    # A lock left by a process that is gone is taken over.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = score_target(cfg).lock
    lock.write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename,
                                "started_at": "2027-04-01T00:00:00+00:00"}))
    r = score_job.run_score(spark, cfg)
    assert not lock.exists()
    scores = _published(cfg, "2027-04-01")
    selected = scores[scores["model_variant"] == r["model_variant"]]
    assert len(selected) == r["rows_scored"]
    assert selected["id"].is_unique


def test_a_run_that_dies_before_publishing_leaves_the_previous_partition(
        spark: Any, demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _with(demo.cfg, score_input=str(_input(demo, tmp_path / "a.csv", 70, start=800)),
                run_date="2027-03-01")
    score_job.run_score(spark, cfg)
    part = cfg.out / "scores" / "run_date=2027-03-01"
    files, rows = sorted(p.name for p in part.iterdir()), len(_published(cfg, "2027-03-01"))
    other = _with(cfg, score_input=str(_input(demo, tmp_path / "b.csv", 40, start=900)))
    monkeypatch.setenv(FAULTS_ENV, "score.before_publish=raise")
    with pytest.raises(InjectedFault):
        score_job.run_score(spark, other)
    assert sorted(p.name for p in part.iterdir()) == files
    assert len(_published(cfg, "2027-03-01")) == rows
    # What a run killed there (SIGKILL: no finally) leaves: its staging folders, and the
    # old partition moved aside by a publish cut in the middle.
    staging = cfg.out / "scores" / "_staging"
    for name in ("run_date=2027-03-01.dead0001", "quarantine-run_date=2027-03-01.dead0001"):
        shutil.copytree(part, staging / name)
    shutil.copytree(part, cfg.out / "scores" / ".run_date=2027-03-01.old-dead0001")
    monkeypatch.delenv(FAULTS_ENV)
    r = score_job.run_score(spark, other)
    assert r["rows_in"] == 40 == r["rows_scored"]
    scores = _published(cfg, "2027-03-01")
    assert (scores["model_variant"] == r["model_variant"]).sum() == 40
    assert not list(staging.glob("*run_date=2027-03-01*"))
    assert not list((cfg.out / "scores").glob(".run_date=2027-03-01.old-*"))


def test_output_table_is_written_once_per_run_date(spark: Any, demo: Demo,
                                                   tmp_path: Path) -> None:
    table = "sparkforge_test_scores"
    spark.sql(f"DROP TABLE IF EXISTS {table}")
    a = _input(demo, tmp_path / "a.csv", 50, start=1000, labeled=False)
    b = _input(demo, tmp_path / "b.csv", 30, start=1100, labeled=False)
    try:
        for inp, date in ((a, "2027-05-01"), (a, "2027-05-01"), (b, "2027-05-02")):
            score_job.run_score(spark, _with(demo.cfg, score_input=str(inp), run_date=date,
                                             score_output_table=table))
        got = spark.table(table).toPandas()
        assert got.groupby("run_date").size().to_dict() == {
            d: len(_published(demo.cfg, d)) for d in ("2027-05-01", "2027-05-02")}
        assert not got.duplicated(["run_date", "model_variant", "id"]).any()
    finally:
        spark.sql(f"DROP TABLE IF EXISTS {table}")


# ---------------------------------------------------------------------------
# Reruns, incremental mode, drift, sessions


def test_rerun_of_a_date_replaces_it_without_duplicates(spark: Any, demo: Demo,
                                                        tmp_path: Path) -> None:
    cfg = _with(demo.cfg, score_input=str(_input(demo, tmp_path / "in.csv", 150, start=1200)),
                run_date="2026-02-01")
    first = score_job.run_score(spark, cfg)
    second = score_job.run_score(spark, cfg)
    scores = _published(cfg, "2026-02-01")
    selected = scores[scores["model_variant"] == first["model_variant"]]
    assert len(selected) == first["rows_scored"] == second["rows_scored"]
    assert selected["id"].is_unique
    run = read_json(cfg.out / "scores" / "run_date=2026-02-01" / "_run_manifest.json")
    assert run["model_sha256"] == first["model_sha256"]
    assert run["input_fingerprint"] == first["input_fingerprint"]
    assert not list((cfg.out / "scores" / "_staging").glob("run_date=2026-02-01*"))


def test_incremental_scores_only_new_ids(spark: Any, demo: Demo, tmp_path: Path) -> None:
    old = demo.pool.iloc[1400:1600]
    new = demo.pool.iloc[1600:1700]
    old.to_csv(tmp_path / "day1.csv", index=False)
    pd.concat([old, new]).to_csv(tmp_path / "day2.csv", index=False)
    base = _with(demo.cfg, score_input=str(tmp_path / "day1.csv"), run_date="2027-01-01",
                 run_incremental=True)
    r1 = score_job.run_score(spark, base)
    r2 = score_job.run_score(spark, _with(base, score_input=str(tmp_path / "day2.csv"),
                                          run_date="2027-01-02"))
    assert r2["rows_in"] == _csv_rows(tmp_path / "day2.csv") == 300
    # Every day-1 row was scored then or by an earlier run of this shared run directory.
    assert r2["rows_skipped_already_scored"] >= (r1["rows_scored"]
                                                 + r1["rows_skipped_already_scored"]) > 0
    assert r2["rows_in"] == (r2["rows_scored"] + r2["rows_quarantined"]
                             + r2["rows_skipped_already_scored"])
    day2 = _published(base, "2027-01-02")
    earlier = pd.concat([pd.read_parquet(p) for p in (base.out / "scores").glob("run_date=*")
                         if p.name < "run_date=2027-01-02"])
    assert not set(day2["id"]) & set(earlier["id"])


def test_drift_is_flagged(spark: Any, demo: Demo, tmp_path: Path) -> None:
    t = demo.pool.iloc[1800:2200].drop(columns=[LABEL]).copy()
    t["age"] = (t["age"].astype(int) + 30).astype(str)
    t.to_csv(tmp_path / "older.csv", index=False)
    r = score_job.run_score(spark, _with(demo.cfg, score_input=str(tmp_path / "older.csv"),
                                         run_date="2027-03-05",
                                         score_passthrough_columns=["fnlwgt"]))
    assert r["rows_scored"] + r["rows_quarantined"] == 400
    assert "fnlwgt" in _published(demo.cfg, "2027-03-05").columns
    assert "age" in r["drift"]["drifted"]
    assert r["drift"]["psi"]["hours_per_week"] < r["drift"]["threshold"]


def test_one_onnx_session_per_python_worker(spark: Any, demo: Demo, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx

    from sparkforge.artifacts import sha256_file
    from sparkforge.infer import LOAD_LOG_ENV, score_df

    log = tmp_path / "loads.txt"
    monkeypatch.setenv(LOAD_LOG_ENV, str(log))
    out = demo.cfg.out
    # A model file nobody has loaded yet (its sha256 is the cache key).
    sel = read_json(out / "compressed" / "selection.json")
    m = onnx.load(str(out / sel["paths"]["fp32"]))
    m.doc_string = "copy for the load-count test"
    fresh = tmp_path / "model.onnx"
    onnx.save(m, str(fresh))
    pre = spark.read.parquet(str(out / "preprocessed")).repartition(6)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "50")
    try:
        n = score_df(pre, model_path=str(fresh), sha256=sha256_file(fresh),
                     inputs=["features"], labels=read_json(out / "model" / "labels.json"),
                     variant="t", batch_size=16).count()
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "4096")
    assert n == pre.count()
    loads = log.read_text().split("\n")[:-1]
    pids = [line.split()[0] for line in loads]
    # Per worker, never per batch: no Python worker loaded the model twice, and there
    # were fewer loads than tasks (6), let alone batches (~40).
    assert len(set(pids)) == len(pids)
    assert 1 <= len(loads) <= 6 < n // 50


def test_a_poisoned_row_changes_no_other_rows_output(spark: Any, demo: Demo,
                                                     tmp_path: Path) -> None:
    """One inf used to turn its whole int8_dynamic batch to NaN (dynamic quantisation
    takes its scales from the batch) with exit 0. Non-finite and absurd values are now
    quarantined before the model, so every other row's output is the same, bit for bit,
    with or without the poisoned rows in the table."""
    clean = demo.pool.iloc[600:800].reset_index(drop=True)
    a = tmp_path / "clean.csv"
    clean.to_csv(a, index=False)
    poison = clean.iloc[[3, 40, 90, 150]].copy()
    poison["age"] = ["inf", "NaN", "-Infinity", "1e30"]
    mixed = pd.concat([clean.iloc[:50], poison.iloc[:2], clean.iloc[50:120], poison.iloc[2:],
                       clean.iloc[120:]], ignore_index=True)
    b = tmp_path / "poisoned.csv"
    mixed.to_csv(b, index=False)
    ra = score_job.run_score(spark, _with(demo.cfg, score_input=str(a), run_date="2027-03-01"))
    rb = score_job.run_score(spark, _with(demo.cfg, score_input=str(b), run_date="2027-03-02"))
    assert rb["quarantine_reasons"] == {"bad_value:age": 3, "out_of_range:age": 1}
    assert rb["rows_scored"] == ra["rows_scored"] == _csv_rows(a)
    cols = ["id", "prediction", "probability"]
    sa = _published(demo.cfg, "2027-03-01")
    sb = _published(demo.cfg, "2027-03-02")
    sa = sa[sa["model_variant"] == ra["model_variant"]][cols].sort_values("id")
    sb = sb[sb["model_variant"] == rb["model_variant"]][cols].sort_values("id")
    assert list(sa["id"]) == list(sb["id"])
    assert (sa["prediction"].to_numpy() == sb["prediction"].to_numpy()).all()
    pa_, pb_ = np.stack(sa["probability"].to_numpy()), np.stack(sb["probability"].to_numpy())
    assert np.isfinite(pb_).all()
    assert np.array_equal(pa_, pb_)


def test_torch_backend_scores_as_onnxruntime_does(spark: Any, trained: Demo, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """score.backend=torch on the same rows: fp32 runs from the torch form compress saved
    (its weights are what the executors load), with onnxruntime's predictions and
    probabilities (within 1e-4); int8_dynamic has no torch form and stays on onnxruntime,
    bit for bit. One log line says which backend ran each variant and why; a changed
    torch weights file stops the run before any Spark work."""
    from sparkforge.infer import LOAD_LOG_ENV

    out = trained.cfg.out
    forms = read_json(out / "compressed" / "selection.json")["torch"]
    assert forms["fp32"] == {"weights": "compressed/fp32/model.safetensors",
                             "spec": "compressed/fp32/model.json"}
    assert "int8" in forms["int8_dynamic"]["reason"]
    recorded = read_json(out / "manifest.json")["artifacts"]
    assert {forms["fp32"]["weights"], forms["fp32"]["spec"]} <= set(recorded)
    # Rows of the training input keep their split, so the test rows are scored by every
    # variant (the selected one scores all rows, the others the test split).
    inp = tmp_path / "seen.csv"
    pd.read_csv(trained.cfg.data.input, dtype=str, keep_default_na=False).iloc[:800].to_csv(
        inp, index=False)
    loads = tmp_path / "loads.txt"
    monkeypatch.setenv(LOAD_LOG_ENV, str(loads))
    cols = ["id", "split", "prediction", "probability"]
    scores, runs = {}, {}
    for backend, date in (("onnxruntime", "2027-06-01"), ("torch", "2027-06-02")):
        caplog.clear()
        with caplog.at_level("INFO", logger="sparkforge.jobs.score"):
            runs[backend] = score_job.run_score(spark, _with(
                trained.cfg, score_input=str(inp), run_date=date, score_backend=backend))
        lines = [r.getMessage() for r in caplog.records if "score.backend=" in r.getMessage()]
        assert len(lines) == 1, lines
        scores[backend] = {v: g[cols].sort_values("id").reset_index(drop=True)
                           for v, g in _published(trained.cfg, date).groupby("model_variant")}
    assert "fp32 on torch (score.backend=torch)" in lines[0]
    assert "int8_dynamic on onnxruntime (no torch form: an int8 graph" in lines[0]
    backends = {v: b["backend"] for v, b in runs["torch"]["backends"].items()}
    assert backends == {"fp32": "torch", "int8_dynamic": "onnxruntime"}
    weights_sha = runs["torch"]["backends"]["fp32"]["sha256"]
    assert weights_sha == recorded[forms["fp32"]["weights"]]["sha256"]
    assert weights_sha in loads.read_text()   # the executors loaded the torch weights
    assert {b["backend"] for b in runs["onnxruntime"]["backends"].values()} == {"onnxruntime"}
    assert runs["torch"]["rows_scored_per_variant"] == runs["onnxruntime"][
        "rows_scored_per_variant"]
    assert scores["torch"].keys() == scores["onnxruntime"].keys() == {"fp32", "int8_dynamic"}
    for variant, ort_scores in scores["onnxruntime"].items():
        torch_scores = scores["torch"][variant]
        assert len(torch_scores) == len(ort_scores), variant
        assert (ort_scores["split"] == "test").sum() > 20
        assert list(torch_scores["id"]) == list(ort_scores["id"])
        assert list(torch_scores["prediction"]) == list(ort_scores["prediction"])
        p_torch = np.stack(torch_scores["probability"].to_numpy())
        p_ort = np.stack(ort_scores["probability"].to_numpy())
        if variant == "fp32":
            np.testing.assert_allclose(p_torch, p_ort, atol=1e-4, rtol=0)
        else:
            assert np.array_equal(p_torch, p_ort)

    weights = out / forms["fp32"]["weights"]
    original = weights.read_bytes()
    _append_byte(weights)
    try:
        with pytest.raises(ArtifactError, match=r"model\.safetensors.*rerun compress"):
            score_job.run_score(spark, _with(trained.cfg, score_input=str(inp),
                                             run_date="2027-06-03", score_backend="torch"))
    finally:
        weights.write_bytes(original)
    assert not (out / "scores" / "run_date=2027-06-03").exists()


@pytest.mark.parametrize("broadcast", [True, False], ids=["broadcast", "shuffle"])
def test_scored_rows_keep_the_split_preprocess_gave_them_by_either_join(
        spark: Any, trained: Demo, monkeypatch: pytest.MonkeyPatch, broadcast: bool) -> None:
    """Rows the pipeline saw keep their train/val/test split (read back from
    preprocessed/ with pyarrow), rows it never saw are "new". Preprocess's (id, split)
    pairs are broadcast when it kept at most BROADCAST_SEEN rows (the manifest's
    rows_kept), else joined by a shuffle; Spark's own broadcast choice is off here, so
    the plan shows the join the code chose."""
    import pyarrow.dataset as ds

    pre = ds.dataset(trained.cfg.out / "preprocessed", partitioning="hive").to_table(
        columns=["id", "split"]).to_pandas()
    assert set(pre["split"]) == {"train", "val", "test"}
    expected = (pre.assign(r=pre["split"].map({"train": 0, "val": 1, "test": 2}))
                .sort_values("r").drop_duplicates("id").set_index("id")["split"])
    pick = np.random.default_rng(0).choice(len(expected), 90, replace=False)
    ids = [str(i) for i in expected.index[pick]] + [f"never-seen-{i}" for i in range(10)]
    rows = spark.createDataFrame([(i, n) for n, i in enumerate(ids)], "id string, n int")
    monkeypatch.setattr(score_job, "BROADCAST_SEEN", 10**9 if broadcast else 10)
    keys = ("spark.sql.autoBroadcastJoinThreshold",
            "spark.sql.adaptive.autoBroadcastJoinThreshold")
    before = {k: spark.conf.get(k, None) for k in keys}
    try:
        for k in keys:
            spark.conf.set(k, "-1")
        joined = score_job._with_seen_split(spark, trained.cfg, rows)
        got = {r["id"]: r["split"] for r in joined.collect()}
        plan = joined._jdf.queryExecution().executedPlan().toString()
    finally:
        for k, v in before.items():
            spark.conf.unset(k) if v is None else spark.conf.set(k, v)
    assert len(got) == len(ids) == 100
    assert {i: got[i] for i in ids[:90]} == {i: expected[i] for i in ids[:90]}
    assert {got[i] for i in ids[90:]} == {"new"}
    assert ("BroadcastHashJoin" in plan) is broadcast, plan


# --- score_parquet: tasks that read and write their own Parquet files ----------------------

def _selected_model(cfg: Config) -> dict[str, Any]:
    """score_df / score_parquet arguments for the run's selected variant."""
    from sparkforge.artifacts import sha256_file
    from sparkforge.models import task_input_names

    sel = read_json(cfg.out / "compressed" / "selection.json")
    path = cfg.out / sel["paths"][sel["selected"]]
    return {"model_path": str(path), "sha256": sha256_file(path),
            "inputs": task_input_names(text=False),
            "labels": read_json(cfg.out / "model" / "labels.json"),
            "variant": sel["selected"]}


def _input_ids(src: Path) -> list[str]:
    """The ids of the Parquet files under ``src`` in path order, read with pyarrow file by
    file (pathlib's listing; hidden and ``_`` names skipped, as Spark does)."""
    import pyarrow.parquet as pq

    files = sorted(p for p in src.rglob("*") if p.is_file() and not any(
        part.startswith((".", "_")) for part in p.relative_to(src).parts))
    return [str(i) for f in files for i in pq.read_table(f, columns=["id"])["id"].to_pylist()]


def _names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_score_parquet_writes_score_dfs_rows_and_values_for_every_input_row(
        spark: Any, trained: Demo, tmp_path: Path) -> None:
    """A run's preprocessed/ (split=... directories, several files) scored by 3 tasks that
    read their own row groups in 64-row batches: every input row once, in the input's
    order across the committed files, with score_df's predictions, probabilities and
    schema; one file per task, _SUCCESS, nothing left of the attempts."""
    import pyarrow.parquet as pq

    from sparkforge.infer import score_df, score_parquet

    kw = _selected_model(trained.cfg)
    src, dest = trained.cfg.out / "preprocessed", tmp_path / "scores"
    ids = _input_ids(src)
    assert len(ids) > 1000
    assert len(set(ids)) == len(ids)
    r = score_parquet(spark, str(src), str(dest), tasks=3, batch_rows=64, **kw)
    assert r.tasks == 3 == len(r.files)
    assert r.rows == len(ids)
    assert _names(dest) == sorted([*(Path(f).name for f in r.files), "_SUCCESS"])
    # Each task's file is a contiguous stretch of the input: the files in order are the
    # input in order.
    got = pd.concat([pq.read_table(f).to_pandas() for f in r.files], ignore_index=True)
    assert list(got["id"]) == ids
    ref_df = score_df(spark.read.parquet(str(src)), **kw)
    ref = pd.DataFrame(ref_df.toPandas()).set_index("id").loc[got["id"]]
    for col in ("label", "prediction", "split", "model_variant"):
        assert list(got[col]) == list(ref[col]), col
    assert set(got["split"]) == {"train", "val", "test"}
    np.testing.assert_allclose(np.stack(got["probability"].to_numpy()),
                               np.stack(ref["probability"].to_numpy()), rtol=0, atol=1e-6)
    assert spark.read.parquet(str(dest)).schema.simpleString() == ref_df.schema.simpleString()
    # Replacing it needs overwrite=True, and then holds the new job's files only.
    r2 = score_parquet(spark, str(src), str(dest), tasks=2, overwrite=True, **kw)
    assert _names(dest) == sorted([*(Path(f).name for f in r2.files), "_SUCCESS"])
    assert len(pd.read_parquet(dest)) == len(ids)


def test_score_parquet_to_a_relative_dest_writes_where_the_caller_is(
        spark: Any, trained: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative dest is the caller's: the executors' Python workers (started in the
    session's first directory, as a Connect server's run in its own) write there too."""
    from sparkforge.infer import score_parquet

    monkeypatch.chdir(tmp_path)  # the workers stay in the directory they started in
    r = score_parquet(spark, str(trained.cfg.out / "preprocessed"), "scores", tasks=2,
                      **_selected_model(trained.cfg))
    assert _names(tmp_path / "scores") == sorted([*(Path(f).name for f in r.files),
                                                  "_SUCCESS"])
    assert len(pd.read_parquet(tmp_path / "scores")) == len(
        _input_ids(trained.cfg.out / "preprocessed"))


class _NoSpark:
    """A stand-in session that fails any use: the checks must come before Spark work."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Spark was used ({name}) before the arguments were checked")


def test_score_parquet_refuses_bad_arguments_before_any_spark_work(
        trained: Demo, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from sparkforge.infer import score_parquet

    kw = {**_selected_model(trained.cfg), "tasks": 2}
    src = trained.cfg.out / "preprocessed"
    part = next((src / "split=test").glob("part-*.parquet"))
    table = pq.read_table(part)
    nospark: Any = _NoSpark()

    def refused(source: Path, dest: Path, **extra: Any) -> str:
        with pytest.raises((ValueError, FileExistsError, FileNotFoundError)) as err:
            score_parquet(nospark, str(source), str(dest), **kw, **extra)
        return str(err.value)

    (tmp_path / "nosplit").mkdir()  # a file from split=test/ taken out of its directory
    pq.write_table(table, tmp_path / "nosplit" / "a.parquet")
    assert "no column(s) ['split']" in refused(tmp_path / "nosplit", tmp_path / "o")
    (tmp_path / "taken").mkdir()
    assert "overwrite=True" in refused(src, tmp_path / "taken")
    assert "overlap" in refused(src, src / "scores")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "_SUCCESS").touch()
    assert "no Parquet files" in refused(tmp_path / "empty", tmp_path / "o")
    assert "does not exist" in refused(tmp_path / "absent", tmp_path / "o")
    (tmp_path / "mixed").mkdir()  # one file with a split column, one without
    pq.write_table(table.append_column("split", pa_strings(["test"] * len(table))),
                   tmp_path / "mixed" / "a.parquet")
    pq.write_table(table, tmp_path / "mixed" / "b.parquet")
    assert "score files of one schema" in refused(tmp_path / "mixed", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_score_parquet_of_files_without_rows_writes_an_empty_table_spark_reads(
        spark: Any, trained: Demo, tmp_path: Path) -> None:
    """A split=test/ directory whose file has the columns but no rows: nothing to score,
    and dest still holds the schema (one empty file) and _SUCCESS."""
    import pyarrow.parquet as pq

    from sparkforge.infer import score_parquet

    part = next((trained.cfg.out / "preprocessed" / "split=test").glob("part-*.parquet"))
    (tmp_path / "in" / "split=test").mkdir(parents=True)
    pq.write_table(pq.read_table(part).slice(0, 0), tmp_path / "in" / "split=test" / "a.parquet")
    r = score_parquet(spark, str(tmp_path / "in"), str(tmp_path / "out"),
                      **_selected_model(trained.cfg))
    assert (r.rows, r.tasks, len(r.files)) == (0, 0, 1)
    assert _names(tmp_path / "out") == sorted([Path(r.files[0]).name, "_SUCCESS"])
    back = spark.read.parquet(str(tmp_path / "out"))
    assert back.count() == 0
    assert back.columns == ["id", "label", "prediction", "probability", "split",
                            "model_variant"]


def pa_strings(values: list[str]) -> Any:
    import pyarrow as pa

    return pa.array(values, type=pa.string())


def test_a_failed_score_parquet_job_commits_nothing(spark: Any, trained: Demo,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Every attempt fails after writing its file (the shared session tries each task
    once): the job raises, and dest holds no part file, no _SUCCESS, no _temporary."""
    from sparkforge.infer import score_parquet
    from sparkforge.infer.files import TASK_WRITTEN

    # The Python workers' environment comes from the SparkContext's, per function.
    monkeypatch.setitem(spark.sparkContext.environment, FAULTS_ENV, f"{TASK_WRITTEN}=raise")
    dest = tmp_path / "scores"
    with pytest.raises(Exception, match=f"injected fault at {TASK_WRITTEN}"):
        score_parquet(spark, str(trained.cfg.out / "preprocessed"), str(dest), tasks=3,
                      **_selected_model(trained.cfg))
    assert [p for p in dest.rglob("*")] == []


def test_a_failed_cleanup_does_not_hide_the_jobs_error(
        spark: Any, trained: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The job fails and removing its _temporary fails too (an object store refusing the
    delete): the caller gets the job's error, and a warning names what was left."""
    from sparkforge.infer import files
    from sparkforge.infer.files import TASK_WRITTEN

    class RefusesDeletes:  # the driver's file system of dest; the workers keep theirs
        def __init__(self, fs: Any) -> None:
            self.fs = fs

        def __getattr__(self, name: str) -> Any:
            return getattr(self.fs, name)

        def delete_dir(self, path: str) -> None:
            raise OSError(f"delete refused: {path}")

    real = files.filesystem
    dest = tmp_path / "scores"

    def filesystem(uri: str) -> Any:
        fs, root = real(uri)
        return (RefusesDeletes(fs), root) if uri == str(dest) else (fs, root)

    monkeypatch.setattr(files, "filesystem", filesystem)
    monkeypatch.setitem(spark.sparkContext.environment, FAULTS_ENV, f"{TASK_WRITTEN}=raise")
    with caplog.at_level("WARNING", logger="sparkforge.infer.files"), \
            pytest.raises(Exception, match=f"injected fault at {TASK_WRITTEN}"):
        files.score_parquet(spark, str(trained.cfg.out / "preprocessed"), str(dest), tasks=2,
                            **_selected_model(trained.cfg))
    assert any("could not remove" in r.getMessage() and "_temporary" in r.getMessage()
               for r in caplog.records)
    assert not (dest / "_SUCCESS").exists()


def test_score_parquet_retries_a_failed_attempt_and_commits_it_once(
        trained: Demo, tmp_path: Path) -> None:
    """In a session that tries each task twice, the first attempt to finish its file fails
    (its complete file stays in _temporary); the retry succeeds, and the committed output
    holds every input row exactly once."""
    from sparkforge.infer.files import TASK_WRITTEN

    kw = _selected_model(trained.cfg)
    src, dest, fired = trained.cfg.out / "preprocessed", tmp_path / "scores", tmp_path / "fired"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable,
           FAULTS_ENV: f"{TASK_WRITTEN}=raise-once:{fired}"}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("_score_parquet_retry.py")), str(src),
         str(dest), kw["model_path"], kw["sha256"], json.dumps(kw["labels"]), kw["variant"]],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert fired.exists()  # an attempt did fail after writing its file
    assert "injected fault" in proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    ids = _input_ids(src)
    assert out["rows"] == len(ids)
    assert out["tasks"] == 3
    assert out["dest"] == sorted([*(Path(f).name for f in out["files"]), "_SUCCESS"])
    got = pd.read_parquet(dest)
    assert sorted(got["id"]) == sorted(ids)
    assert got["id"].is_unique
