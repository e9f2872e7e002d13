"""Readers: every format x compression x layout gives the rows of the plain CSV; json lines,
multi-line json, parquet; declared schemas and stratified splits; catalog tables."""

from __future__ import annotations

import json
from pathlib import Path

import _input_matrix as M
import numpy as np
import pandas as pd
import pytest

from sparkforge.config import ConfigError, load_config
from sparkforge.data.preflight import check_inputs
from sparkforge.data.prepare import prepare
from sparkforge.jobs.preprocess import run_preprocess

ROOT = Path(__file__).resolve().parents[2]
TAB = ROOT / "conf" / "tabular_classification.yaml"
TEXT = ROOT / "conf" / "text_classification.yaml"


def _rows(n: int, seed: int = 0) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    return [{"k": f"id{i}", "size": float(rng.normal()), "zip": str(int(rng.integers(1000, 1010))),
             "label": str(rng.choice(["a", "b", "c"], p=[0.6, 0.3, 0.1]))} for i in range(n)]


def _matrix_cfg(tmp: Path, kind: str, fmt: str, comp: str, layout: str):  # type: ignore[no-untyped-def]
    source, sets = M.write(tmp / "in", kind, fmt, comp, layout)
    return load_config(M.CONFIGS[kind], [f"data.input={source}", *sets,
                                         f"output.dir={tmp / 'run'}"])


@pytest.fixture(scope="module")
def plain_csv(spark, tmp_path_factory) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    """Kept ids of each config on the plain CSV file: what every other copy must give."""
    out = {}
    for kind in M.CONFIGS:
        cfg = _matrix_cfg(tmp_path_factory.mktemp(f"plain-{kind}"), kind, "csv", "none", "file")
        (ids, reasons), = _outcomes(spark, {"plain": cfg}).values()
        assert (len(ids), reasons) == M.expected(kind)
        out[kind] = ids
    return out


def _outcomes(spark, cfgs: dict[str, object]) -> dict[str, tuple[list[str], dict[str, int]]]:  # type: ignore[no-untyped-def]
    """Kept ids and quarantine reasons of each config, all cases in one Spark job."""
    from functools import reduce

    from pyspark.sql import functions as F

    frames = []
    for name, cfg in cfgs.items():
        prep = prepare(spark, cfg)
        frames.append(prep.kept.select(F.lit(name).alias("case"), "id",
                                       F.lit(None).cast("string").alias("reason")))
        frames.append(prep.quarantine.select(F.lit(name).alias("case"),
                                             F.lit(None).cast("string").alias("id"), "reason"))
    out: dict[str, tuple[list[str], dict[str, int]]] = {n: ([], {}) for n in cfgs}
    for r in reduce(lambda a, b: a.unionByName(b), frames).collect():
        ids, reasons = out[r["case"]]
        if r["reason"] is None:
            ids.append(r["id"])
        else:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    spark.catalog.clearCache()  # prepare caches its frame
    return {n: (sorted(ids), reasons) for n, (ids, reasons) in out.items()}


MATRIX = [(kind, fmt) for kind in M.CONFIGS for fmt in (*M.TEXT_FORMATS, "parquet", "orc")
          if fmt != "text" or kind == "text"]


@pytest.mark.parametrize(("kind", "fmt"), MATRIX)
def test_every_compression_and_layout_reads_the_same_rows(spark, tmp_path: Path, plain_csv,
                                                          kind: str, fmt: str) -> None:
    """Full product of compression x layout for one format and config (prepare level)."""
    cfgs = {}
    for case in M.cases(kind):
        if case[0] == fmt:
            name = "-".join(case)
            cfgs[name] = _matrix_cfg(tmp_path / name, kind, *case)
            check_inputs(cfgs[name])  # preflight reads through codecs and partition folders
    n_kept, want_reasons = M.expected(kind)
    got = _outcomes(spark, cfgs)
    wrong = {n: (len(ids), reasons) for n, (ids, reasons) in got.items()
             if ids != plain_csv[kind] or reasons != want_reasons}
    assert not wrong, f"expected {n_kept} kept rows (the plain CSV's) and {want_reasons}"
    assert len(plain_csv[kind]) == n_kept


# A covering subset through the whole preprocess stage: every format, compression and
# layout at least once per config.
FULL = [("text", "csv", "gz", "glob"), ("text", "jsonl", "bz2", "partitioned"),
        ("text", "json_multiline", "none", "folder"), ("text", "parquet", "none", "file"),
        ("text", "orc", "snappy", "folder"), ("text", "text", "gz", "partitioned"),
        ("tabular", "csv", "bz2", "partitioned"), ("tabular", "jsonl", "gz", "folder"),
        ("tabular", "json_multiline", "bz2", "glob"), ("tabular", "parquet", "zstd", "glob"),
        ("tabular", "orc", "zlib", "file")]


@pytest.mark.parametrize(("kind", "fmt", "comp", "layout"), FULL)
def test_preprocess_stage_on_each_input_kind(spark, tmp_path: Path, plain_csv, kind: str,
                                             fmt: str, comp: str, layout: str) -> None:
    cfg = _matrix_cfg(tmp_path, kind, fmt, comp, layout)
    s = run_preprocess(spark, cfg)
    n_kept, want_reasons = M.expected(kind)
    assert s["rows_in"] == len(M.rows(kind))
    assert s["rows_kept"] == n_kept
    assert s["quarantine_reasons"] == want_reasons
    written = spark.read.parquet(str(tmp_path / "run" / "preprocessed"))
    assert sorted(r["id"] for r in written.select("id").collect()) == plain_csv[kind]
    spark.catalog.clearCache()


def test_json_lines_through_the_text_config_ignore_its_csv_options(spark, tmp_path: Path
                                                                   ) -> None:
    # Before per-format options the CSV multiLine reached the JSON reader: the whole file
    # became one record and preprocess stopped with "1 distinct value(s)".
    cfg = _matrix_cfg(tmp_path, "text", "jsonl", "none", "file")
    assert cfg.data.options == {}
    s = run_preprocess(spark, cfg)
    assert s["rows_kept"] == M.expected("text")[0]


def test_preflight_reads_compressed_headers(tmp_path: Path) -> None:
    cfg = _matrix_cfg(tmp_path, "text", "csv", "gz", "file")
    bad = load_config(TEXT, [f"data.input={cfg.data.input}", "data.label_column=stars",
                             f"output.dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match=r"its columns are text, label$"):
        check_inputs(bad)


def test_catalog_table(spark, tmp_path: Path) -> None:
    cfg = _matrix_cfg(tmp_path, "tabular", "parquet", "snappy", "file")
    spark.read.parquet(cfg.data.input).createOrReplaceTempView("sf_matrix_table")
    tab = load_config(TAB, ["data.input=", "data.table=sf_matrix_table",
                            f"output.dir={tmp_path / 'run'}"])
    check_inputs(tab)
    ids, reasons = _outcomes(spark, {"table": tab})["table"]
    assert len(ids) == M.expected("tabular")[0]
    assert reasons == M.expected("tabular")[1]
    with pytest.raises(ConfigError, match=r"data\.table='no_such_table'"):
        prepare(spark, load_config(TAB, ["data.input=", "data.table=no_such_table",
                                         f"output.dir={tmp_path / 'run'}"]))
    spark.catalog.dropTempView("sf_matrix_table")


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
