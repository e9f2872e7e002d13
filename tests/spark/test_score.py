"""Scheduled scoring: idempotent reruns, atomic publish, incremental mode, one ONNX
session per worker, quarantine of unseen categories, drift."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sparkforge.config import Config, load_config
from sparkforge.jobs import score as score_job
from sparkforge.jobs import stage_fn

ROOT = Path(__file__).resolve().parents[2]


def _table(n: int, seed: int, colors: tuple[str, ...] = ("red", "green", "blue"),
           shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n) + shift, rng.normal(size=n)
    color = rng.choice(list(colors), size=n)
    y = np.where(2 * x1 - x2 + np.where(color == "red", 1.0, -0.5) > 0, "yes", "no")
    return pd.DataFrame({"cust": [f"c{seed}-{i}" for i in range(n)], "x1": x1.round(5),
                         "x2": x2.round(5), "color": color, "y": y})


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory: pytest.TempPathFactory) -> Config:
    d = tmp_path_factory.mktemp("score")
    _table(1500, 1).to_csv(d / "train.csv", index=False)
    cfg = load_config(ROOT / "conf" / "tabular_classification.yaml", [
        f"data.input={d / 'train.csv'}", "data.label_column=y", "data.id_column=cust",
        f"output.dir={d / 'run'}", "train.epochs=3", "train.num_processes=1",
        "run.date=2026-01-01"])
    for stage in ("preprocess", "train", "compress"):
        stage_fn(stage)(spark, cfg)
    return cfg


def _with(cfg: Config, **kw: object) -> Config:
    score = dataclasses.replace(cfg.score, **{k[6:]: v for k, v in kw.items()
                                              if k.startswith("score_")})
    run = dataclasses.replace(cfg.run, **{k[4:]: v for k, v in kw.items()
                                          if k.startswith("run_")})
    return dataclasses.replace(cfg, score=score, run=run)


def _published(cfg: Config, date: str) -> pd.DataFrame:
    return pd.read_parquet(cfg.out / "scores" / f"run_date={date}")


def test_rerun_of_a_date_replaces_it_without_duplicates(spark, trained: Config) -> None:
    cfg = _with(trained, run_date="2026-02-01")
    first = score_job.run_score(spark, cfg)
    second = score_job.run_score(spark, cfg)
    scores = _published(cfg, "2026-02-01")
    selected = scores[scores["model_variant"] == first["model_variant"]]
    assert len(selected) == first["rows_scored"] == second["rows_scored"] == 1500
    assert selected["id"].is_unique
    assert first["rows_in"] == first["rows_scored"] + first["rows_quarantined"]
    run = json.loads((cfg.out / "scores" / "run_date=2026-02-01" / "_run_manifest.json")
                     .read_text())
    assert run["model_sha256"] == first["model_sha256"]
    assert run["input_fingerprint"] == first["input_fingerprint"]
    assert not list((cfg.out / "scores" / "_staging").glob("*"))


def test_failed_run_leaves_the_published_partition_intact(spark, trained: Config,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    cfg = _with(trained, run_date="2026-03-01")
    score_job.run_score(spark, cfg)
    part = cfg.out / "scores" / "run_date=2026-03-01"
    before = sorted(p.name for p in part.iterdir())
    before_rows = len(_published(cfg, "2026-03-01"))
    _table(40, 9).to_csv(tmp_path / "other.csv", index=False)

    def boom(*_: object) -> None:
        raise RuntimeError("killed before publish")

    monkeypatch.setattr(score_job, "_publish", boom)
    with pytest.raises(RuntimeError, match="killed before publish"):
        score_job.run_score(spark, _with(cfg, score_input=str(tmp_path / "other.csv")))
    assert sorted(p.name for p in part.iterdir()) == before
    assert len(_published(cfg, "2026-03-01")) == before_rows
    assert not list((cfg.out / "scores" / "_staging").glob("run_date=*"))


def test_incremental_scores_only_new_ids(spark, trained: Config, tmp_path: Path) -> None:
    old, new = _table(300, 21), _table(120, 22)
    old.to_csv(tmp_path / "day1.csv", index=False)
    pd.concat([old, new]).to_csv(tmp_path / "day2.csv", index=False)
    base = _with(trained, score_input=str(tmp_path / "day1.csv"), run_date="2027-01-01",
                 run_incremental=True)
    score_job.run_score(spark, base)
    r2 = score_job.run_score(spark, _with(base, score_input=str(tmp_path / "day2.csv"),
                                          run_date="2027-01-02"))
    assert r2["rows_in"] == 420
    assert r2["rows_skipped_already_scored"] >= 300
    assert r2["rows_in"] == (r2["rows_scored"] + r2["rows_quarantined"]
                             + r2["rows_skipped_already_scored"])
    day2 = _published(base, "2027-01-02")
    day2_ids = set(day2[day2["model_variant"] == r2["model_variant"]]["id"])
    assert day2_ids <= set(new["cust"])
    assert not day2_ids & set(old["cust"])


def test_unseen_categories_and_labels_are_quarantined(spark, trained: Config,
                                                      tmp_path: Path) -> None:
    t = _table(200, 31, colors=("red", "green", "purple"))
    t.loc[:9, "y"] = "maybe"                       # a label never seen in training
    t.loc[10:14, "x1"] = "n/a"                     # wrong type in a numeric column
    t.to_csv(tmp_path / "odd.csv", index=False)
    r = score_job.run_score(spark, _with(trained, score_input=str(tmp_path / "odd.csv"),
                                         run_date="2027-02-01"))
    purple = int(((t["color"] == "purple") & (t.index >= 15)).sum())
    assert r["quarantine_reasons"] == {"unseen_label": 10, "bad_type:x1": 5,
                                       "unseen_category:color": purple}
    assert r["rows_in"] == 200 == r["rows_scored"] + r["rows_quarantined"]
    q = pd.read_parquet(trained.out / "quarantine" / "score" / "run_date=2027-02-01")
    assert set(q["stage"]) == {"score"}
    assert len(q) == r["rows_quarantined"]


def test_unlabeled_table_is_scored_and_drift_is_flagged(spark, trained: Config,
                                                        tmp_path: Path) -> None:
    t = _table(400, 41, shift=3.0).drop(columns=["y"])
    t.to_csv(tmp_path / "shifted.csv", index=False)
    r = score_job.run_score(spark, _with(trained, score_input=str(tmp_path / "shifted.csv"),
                                         run_date="2027-03-01",
                                         score_passthrough_columns=["x1"]))
    assert r["rows_scored"] == 400
    scores = _published(trained, "2027-03-01")
    assert scores["label"].isna().all()
    assert "x1" in scores.columns
    assert "x1" in r["drift"]["drifted"]            # shifted by 3 sd
    assert r["drift"]["psi"]["x2"] < r["drift"]["threshold"]


def test_one_onnx_session_per_python_worker(spark, trained: Config, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from sparkforge.infer import LOAD_LOG_ENV

    log = tmp_path / "loads.txt"
    monkeypatch.setenv(LOAD_LOG_ENV, str(log))
    # A model file nobody has loaded yet (its sha256 is the cache key).
    sel = json.loads((trained.out / "compressed" / "selection.json").read_text())
    src = trained.out / sel["paths"]["fp32"]
    fresh = tmp_path / "model.onnx"
    import onnx

    m = onnx.load(str(src))
    m.doc_string = "copy for the load-count test"
    onnx.save(m, str(fresh))
    from sparkforge.artifacts import sha256_file
    from sparkforge.infer import score_df

    pre = spark.read.parquet(str(trained.out / "preprocessed")).repartition(6)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "50")
    try:
        n = score_df(pre, model_path=str(fresh), sha256=sha256_file(fresh),
                     inputs=["features"], labels=["no", "yes"], variant="t",
                     batch_size=16).count()
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "4096")
    assert n == pre.count()
    loads = log.read_text().split("\n")[:-1]
    pids = [line.split()[0] for line in loads]
    batches = n // 50
    # Per worker, never per batch: no Python worker loaded the model twice, and there
    # were fewer loads than tasks (6), let alone batches (~30).
    assert len(set(pids)) == len(pids)
    assert 1 <= len(loads) <= 6 < batches
