"""Readers (json lines, multi-line json, parquet), declared schemas and stratified splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sparkforge.config import load_config
from sparkforge.data.prepare import prepare
from sparkforge.jobs.preprocess import run_preprocess

ROOT = Path(__file__).resolve().parents[2]
TAB = ROOT / "conf" / "tabular_classification.yaml"


def _rows(n: int, seed: int = 0) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    return [{"k": f"id{i}", "size": float(rng.normal()), "zip": str(int(rng.integers(1000, 1010))),
             "label": str(rng.choice(["a", "b", "c"], p=[0.6, 0.3, 0.1]))} for i in range(n)]


def test_json_lines_quarantines_a_malformed_line(spark, tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in _rows(60)] + ['{"k": "bad", "size": ', '{"k": "x2"}']
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    cfg = load_config(TAB, [f"data.input={tmp_path / 'in.jsonl'}", "data.format=json",
                            "data.options={}", "data.id_column=k",
                            f"output.dir={tmp_path / 'run'}",
                            "preprocess.max_quarantine_fraction=0.5"])
    s = run_preprocess(spark, cfg)
    assert s["rows_in"] == 62
    assert s["quarantine_reasons"] == {"malformed_record": 1, "null_label": 1}
    assert s["rows_kept"] == 60


def test_multiline_json_and_parquet_inputs(spark, tmp_path: Path) -> None:
    rows = _rows(40)
    (tmp_path / "multi.json").write_text(json.dumps(rows, indent=2))
    pd.DataFrame(rows).to_parquet(tmp_path / "in.parquet")
    for fmt, path, opts in (("json", "multi.json", ["data.options.multiLine=true"]),
                            ("parquet", "in.parquet", [])):
        cfg = load_config(TAB, [f"data.input={tmp_path / path}", f"data.format={fmt}",
                                "data.options={}", *opts, "data.id_column=k",
                                f"output.dir={tmp_path / fmt}"])
        prep = prepare(spark, cfg)
        assert prep.kept.count() == 40, fmt
        assert prep.quarantine.count() == 0, fmt
        assert prep.numeric_columns == ["size"], fmt


def test_declared_schema_overrides_inference(spark, tmp_path: Path) -> None:
    pd.DataFrame(_rows(50)).to_csv(tmp_path / "in.csv", index=False)
    base = [f"data.input={tmp_path / 'in.csv'}", "data.id_column=k",
            f"output.dir={tmp_path / 'run'}"]
    inferred = prepare(spark, load_config(TAB, base))
    assert inferred.numeric_columns == ["size", "zip"]          # digits look numeric
    declared = prepare(spark, load_config(TAB, [*base, "data.schema.zip=string"]))
    assert declared.numeric_columns == ["size"]
    assert declared.categorical_columns == ["zip"]


def test_stratified_split_has_exact_label_proportions(spark, tmp_path: Path) -> None:
    pd.DataFrame(_rows(1000, seed=3)).to_csv(tmp_path / "in.csv", index=False)
    cfg = load_config(TAB, [f"data.input={tmp_path / 'in.csv'}", "data.id_column=k",
                            f"output.dir={tmp_path / 'run'}", "preprocess.split.stratify=true"])
    kept = prepare(spark, cfg).kept.toPandas()      # 1000 generated rows
    for _, g in kept.groupby("label"):
        frac = g["split"].value_counts(normalize=True)
        assert frac["train"] == pytest.approx(0.8, abs=2 / len(g) + 1e-9)
        assert frac["test"] == pytest.approx(0.1, abs=2 / len(g) + 1e-9)
    again = prepare(spark, cfg).kept.repartition(7).toPandas()
    merged = kept.merge(again, on="id")
    assert (merged["split_x"] == merged["split_y"]).all()
