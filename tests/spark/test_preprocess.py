"""Preprocessing: quarantine reasons, row-count invariant, split stability, no leakage,
and the saved tokenizer reproducing the ids."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from _train_helpers import encode_dense, read_preprocessed

from sparkforge.artifacts import read_json
from sparkforge.config import load_config
from sparkforge.data.prepare import DataQualityError, split_column
from sparkforge.jobs.preprocess import run_preprocess

ROOT = Path(__file__).resolve().parents[2]


def _write_messy_tabular(path: Path, n_good: int = 300) -> dict[str, int]:
    rng = np.random.default_rng(42)
    lines = ["id,age,city,income,label"]
    for i in range(n_good):
        lines.append(f"r{i},{int(rng.integers(18, 90))},{rng.choice(['ams', 'ber', 'par'])},"
                     f"{rng.normal(50, 10):.3f},{rng.choice(['yes', 'no'])}")
    bad = {
        "malformed_record": ["m1,33,ams,40.0,yes,EXTRA", "m2,44"],
        "bad_type:age": ["t1,forty,ams,40.0,no"],
        "bad_type:income": ["t2,40,ber,lots,yes"],
        "null_label": ["n1,50,par,30.0,", "n2,51,par,31.0,  "],
        "null_id": [",52,par,32.0,no"],
    }
    for rows in bad.values():
        lines.extend(rows)
    lines.append(lines[1].replace("r0,", "r0,", 1))  # exact duplicate of the first row
    path.write_text("\n".join(lines) + "\n")
    counts = {k: len(v) for k, v in bad.items()}
    counts["duplicate"] = 1
    return counts


def _tab_cfg(inp: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(ROOT / "conf" / "tabular_classification.yaml",
                       [f"data.input={inp}", "data.label_column=label", "data.id_column=id",
                        f"output.dir={out}", "preprocess.max_quarantine_fraction=0.5", *extra])


def test_messy_tabular_csv_quarantines_every_bad_row_with_its_reason(
        spark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    from sparkforge.jobs import preprocess as pre_job

    # A small cap, so that these 300 rows need several row groups per file.
    monkeypatch.setattr(pre_job, "ROW_GROUP_ROWS", 16)
    inp = tmp_path / "messy.csv"
    expected = _write_messy_tabular(inp)
    out = tmp_path / "run"
    summary = run_preprocess(spark, _tab_cfg(inp, out))
    # Training ranks decode whole row groups: they must stay bounded however big a file is.
    groups = [pq.ParquetFile(f).metadata.row_group(i).num_rows
              for f in (out / "preprocessed").rglob("*.parquet")
              for i in range(pq.ParquetFile(f).metadata.num_row_groups)]
    assert max(groups) == 16
    assert sum(groups) == 300
    n_lines = len(inp.read_text().splitlines()) - 1
    assert summary["rows_in"] == n_lines
    assert summary["rows_in"] == summary["rows_kept"] + summary["rows_quarantined"]
    assert summary["quarantine_reasons"] == expected
    assert summary["numeric_columns"] == ["age", "income"]
    assert summary["categorical_columns"] == ["city"]
    # a few rows: the bad ones
    q = spark.read.parquet(str(out / "quarantine" / "preprocess")).toPandas()
    assert len(q) == sum(expected.values())
    assert set(q["stage"]) == {"preprocess"}
    forty = q[q["reason"] == "bad_type:age"]
    assert json.loads(forty["raw"].iloc[0])["age"] == "forty"  # the raw record is kept
    manifest = read_json(out / "manifest.json")["preprocess"]
    assert manifest["rows_quarantined"] == sum(expected.values())
    pre = spark.read.parquet(str(out / "preprocessed"))
    assert pre.count() == summary["rows_kept"] == 300


def test_quarantine_gate_stops_the_run(spark, tmp_path: Path) -> None:
    inp = tmp_path / "messy.csv"
    _write_messy_tabular(inp, n_good=20)
    cfg = _tab_cfg(inp, tmp_path / "run", "preprocess.max_quarantine_fraction=0.05")
    with pytest.raises(DataQualityError, match="max_quarantine_fraction"):
        run_preprocess(spark, cfg)


def test_text_quarantine_and_saved_tokenizer_reproduces_ids(spark, tmp_path: Path) -> None:
    inp = tmp_path / "reviews.csv"
    rng = np.random.default_rng(0)
    words = ["great", "awful", "film", "plot", "acting", "ｆｕｌｌ－ｗｉｄｔｈ", "café"]
    with open(inp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for i in range(200):
            w.writerow([" ".join(rng.choice(words, size=int(rng.integers(3, 12)))) + f" n{i}",
                        rng.choice(["pos", "neg"])])
        w.writerow(["   ", "pos"])                     # empty text
        w.writerow(["no label here", ""])               # null label
        w.writerow(["multi\nline review", "neg"])       # quoted newline: a good row
    fh_bad = inp.read_text() + 'x,y,z\n'                # too many fields: malformed
    inp.write_text(fh_bad)
    out = tmp_path / "run"
    cfg = load_config(ROOT / "conf" / "text_classification.yaml",
                      [f"data.input={inp}", f"output.dir={out}", "tokenizer.kind=trained",
                       "tokenizer.vocab_size=200", "tokenizer.max_length=16",
                       "preprocess.max_quarantine_fraction=0.5"])
    s = run_preprocess(spark, cfg)
    assert s["quarantine_reasons"] == {"empty_text": 1, "null_label": 1, "malformed_record": 1}
    assert s["rows_kept"] == 201
    assert s["rows_in"] == 204
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(out / "model" / "tokenizer.json"))
    table = pq.read_table(out / "preprocessed", columns=["text", "input_ids", "attention_mask"])
    pdf = table.to_pandas()
    assert all(len(x) == 16 for x in pdf["input_ids"])
    assert "multi\nline review" in set(pdf["text"])
    assert any("full-width" in t for t in pdf["text"])  # NFKC folded the full-width form
    encs = tok.encode_batch(pdf["text"].tolist())
    assert [e.ids for e in encs] == [list(x) for x in pdf["input_ids"]]
    assert [e.attention_mask for e in encs] == [list(x) for x in pdf["attention_mask"]]


def test_split_is_stable_under_repartitioning(spark) -> None:
    from pyspark.sql import functions as F

    df = spark.range(5000).select(F.concat(F.lit("id-"), F.col("id").cast("string")).alias("id"))
    a = df.withColumn("split", split_column(F.col("id"), 0.8, 0.1, 42))
    b = df.repartition(7).withColumn("split", split_column(F.col("id"), 0.8, 0.1, 42))
    joined = a.join(b.withColumnRenamed("split", "split_b"), "id")
    assert joined.count() == 5000
    assert joined.filter(F.col("split") != F.col("split_b")).count() == 0
    frac = {r["split"]: r["count"] / 5000 for r in a.groupBy("split").count().collect()}
    assert abs(frac["train"] - 0.8) < 0.03
    assert abs(frac["test"] - 0.1) < 0.03
    other_seed = df.withColumn("s2", split_column(F.col("id"), 0.8, 0.1, 7))
    assert other_seed.join(a, "id").filter(F.col("s2") != F.col("split")).count() > 0


def test_fitted_statistics_come_from_train_split_only(spark, tmp_path: Path) -> None:
    inp = tmp_path / "messy.csv"
    _write_messy_tabular(inp)
    out = tmp_path / "run"
    run_preprocess(spark, _tab_cfg(inp, out))
    stats = read_json(out / "model" / "preprocessor.json")
    raw = pd.read_csv(inp, dtype=str, on_bad_lines="skip")
    splits = pq.read_table(out / "preprocessed", columns=["id", "split"]).to_pandas()
    merged = raw.merge(splits, on="id").drop_duplicates("id")
    ages = pd.to_numeric(merged["age"])
    train_mean = ages[merged["split"] == "train"].mean()
    assert stats["numeric"]["age"]["mean"] == pytest.approx(train_mean, rel=1e-12)
    assert stats["numeric"]["age"]["mean"] != pytest.approx(ages.mean(), rel=1e-9)
    train_std = ages[merged["split"] == "train"].std(ddof=0)
    assert stats["numeric"]["age"]["std"] == pytest.approx(train_std, rel=1e-9)
    # the same rows re-encoded at scoring time give the same features
    feats = read_preprocessed(out / "preprocessed", ["id", "features"])
    row = feats.merge(merged, on="id").iloc[0]
    assert row["features"][0] == pytest.approx(
        (float(row["age"]) - train_mean) / train_std, rel=1e-5)


def test_encoding_survives_the_json_round_trip(spark, tmp_path: Path) -> None:
    """Scoring re-reads preprocessor.json (sorted keys): features must come out identical."""
    from sparkforge import features

    pdf = pd.DataFrame({"zeta": [1.0, 2.0, 3.0], "alpha": [10.0, 0.0, 5.0],
                        "mid": ["a", "b", "a"]})
    df = spark.createDataFrame(pdf)
    stats = features.fit(df, ["zeta", "alpha"], ["mid"])
    (tmp_path / "p.json").write_text(json.dumps(stats, sort_keys=True))
    again = json.loads((tmp_path / "p.json").read_text())
    a = encode_dense(df, stats, [])["features"]
    b = encode_dense(df, again, [])["features"]
    np.testing.assert_array_equal(np.stack(a.to_numpy()), np.stack(b.to_numpy()))
    assert np.stack(a.to_numpy()).shape == (3, stats["dim"])


def test_regression_label_of_the_wrong_type_is_quarantined(spark, tmp_path: Path) -> None:
    inp = tmp_path / "reg.csv"
    inp.write_text("x,y\n" + "".join(f"{i},{i * 0.5}\n" for i in range(50)) + "7,seven\n")
    cfg = load_config(ROOT / "conf" / "tabular_classification.yaml", [
        f"data.input={inp}", "task=tabular_regression", "data.label_column=y",
        f"output.dir={tmp_path / 'run'}", "preprocess.max_quarantine_fraction=0.5"])
    s = run_preprocess(spark, cfg)
    assert s["quarantine_reasons"] == {"bad_label_type": 1}
    assert s["rows_in"] == 51 == s["rows_kept"] + s["rows_quarantined"]
    # the target's train-split statistics (the model learns it standardised)
    pre = pq.read_table(tmp_path / "run" / "preprocessed", columns=["label", "split"]
                        ).to_pandas()
    y = pre.loc[pre["split"] == "train", "label"].astype(float)
    assert s["target"] == pytest.approx({"mean": y.mean(), "std": y.std(ddof=0)})


def test_the_number_guard_never_refuses_a_string_that_casts_to_a_double(spark) -> None:
    """The type scan skips the (costly, exception-throwing) cast for values that cannot be
    numbers; the reference is Spark's own try_cast of every value, guarded or not."""
    from sparkforge.data.prepare import may_be_number_sql

    values = ["1", " 2.5 ", "\t-3", "\n+.5", "1e5", "-1E-3", ".5", "5.", "1d", "2F",
              "0x1p3", "NaN", "nan", " -Infinity", "+inf", "INF", "infinity", "-nan",
              "\u00a07", "\u0661\u0662", "\uff11", "1,5", "abc", "n/a", "na", "?", "-",
              "--", "", " ", "none", "null", "i", "n", "e5", "+", ".", "c0_1", "1 2"]
    df = spark.createDataFrame([(v,) for v in values], "v string")
    rows = df.selectExpr("v", "try_cast(v AS DOUBLE) AS d",
                         f"{may_be_number_sql('v')} AS guard").collect()
    casts = [r.v for r in rows if r.d is not None]
    assert len(casts) >= 15  # the reference parses the numbers above
    assert [r.v for r in rows if r.d is not None and not r.guard] == []
    # ...and it refuses what is plainly not a number, which is what makes it pay
    assert {r.v for r in rows if not r.guard} >= {"abc", "c0_1", "?", "e5", "\u00a07"}


def test_missing_value_tokens_are_recognised_as_before_the_first_character_test(spark) -> None:
    """is_null_token_sql looks at the first code point before it lower-cases and trims;
    the reference is the plain rule: null, or trim(spaces) + lower case in NULL_TOKENS."""
    from sparkforge.data.prepare import NULL_TOKENS, is_null_token_sql

    values = [None, "", " ", "   ", "?", " ? ", "NA", "na", " Na ", "N/A", "n/a", "NULL",
              "Null", "none", "NONE ", "-", "--", " -- ", "---", "\t?", "nan", "n", "0",
              "1.5", "abc", "?x", "-1", "\u00a0NA", "nA", "NoNe", "n/a/", "x?"]
    df = spark.createDataFrame([(v,) for v in values], "v string")
    got = {r.v: r.t for r in df.selectExpr("v", f"{is_null_token_sql('v')} AS t").collect()}
    want = {v: v is None or v.strip(" ").lower() in NULL_TOKENS for v in values}
    assert got == want
    assert sum(want.values()) >= 15  # most of the list is a spelling of missing


def test_scoring_a_table_with_ids_numbers_no_repeats(spark, tmp_path: Path) -> None:
    """With an id column, scoring needs no repeat numbers (ids come from the column, rows
    are not deduped): no window shuffles every row. Without one, repeats still get -2."""
    from sparkforge.data.prepare import Fitted, prepare

    inp = tmp_path / "t.csv"
    inp.write_text("id,age,city,label\na,30,ams,yes\nb,30,ams,yes\nc,41,ber,no\n")
    fitted = Fitted(labels=["no", "yes"], numeric=["age"], categories={"city": ["ams", "ber"]})

    def plan(prep) -> str:  # type: ignore[no-untyped-def]
        return str(prep.rows._jdf.queryExecution().executedPlan().toString())

    with_ids = prepare(spark, _tab_cfg(inp, tmp_path / "r"), stage="score", fitted=fitted)
    assert "Window" not in plan(with_ids)
    assert sorted(r.id for r in with_ids.kept.collect()) == ["a", "b", "c"]
    no_ids = prepare(spark, _tab_cfg(inp, tmp_path / "r", "data.id_column=null"),
                     stage="score", fitted=fitted)
    assert "Window" in plan(no_ids)
    ids = sorted(r.id for r in no_ids.kept.collect())
    assert len(set(ids)) == 3
    assert sum(i.endswith("-2") for i in ids) == 1  # the repeat of (30, ams)


@pytest.mark.parametrize("joined_by", ["broadcast", "shuffle"])
def test_repeats_numbered_and_conflicts_found_as_a_pandas_groupby_finds_them(
        spark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, joined_by: str) -> None:
    """Repeats are numbered on a narrow projection and joined back (broadcast when few,
    else by a shuffle): ids, dedupe and conflicts as counted by pandas on the input."""
    from sparkforge.data import prepare as prep_mod

    if joined_by == "shuffle":
        monkeypatch.setattr(prep_mod, "BROADCAST_REPEATS", 0)
    rng = np.random.default_rng(7)
    ages, cities = rng.integers(18, 40, 60), rng.choice(["ams", "ber", "par"], 60)
    rows = []
    for _ in range(500):
        k = int(rng.integers(60))
        lab = "yes" if (ages[k] + len(cities[k])) % 2 else "no"
        if rng.random() < 0.02:  # a flipped label: its feature row becomes a conflict
            lab = "no" if lab == "yes" else "yes"
        rows.append((int(ages[k]), str(cities[k]), lab))
    rows += [(int(ages[0]), str(cities[0]), "")] * 2  # repeats of a row, but null_label
    pdf = pd.DataFrame(rows, columns=["age", "city", "label"])
    inp = tmp_path / "t.csv"
    pdf.to_csv(inp, index=False)

    labelled = pdf[pdf["label"] != ""]
    n_labels = labelled.groupby(["age", "city"])["label"].nunique()
    sizes = labelled.groupby(["age", "city"]).size()
    clean = sizes[n_labels == 1]
    n_conflicting = int(sizes[n_labels > 1].sum())
    assert n_conflicting > 0  # the data exercise conflicts...
    assert (clean > 2).any()  # ...and rows repeated more than twice

    for dedupe in ("false", "true"):
        cfg = _tab_cfg(inp, tmp_path / f"r{dedupe}", "data.id_column=null",
                       f"preprocess.dedupe={dedupe}")
        prep = prep_mod.prepare(spark, cfg)
        plan = str(prep.rows._jdf.queryExecution().executedPlan().toString())
        assert ("BroadcastHashJoin" if joined_by == "broadcast" else "ShuffledHashJoin") in plan
        kept = prep.kept.toPandas()
        reasons = prep.quarantine.groupBy("reason").count().toPandas()
        got = dict(zip(reasons["reason"], reasons["count"], strict=True))
        want = {"conflicting_label": n_conflicting, "null_label": 2}
        if dedupe == "true":
            want["duplicate"] = int((clean - 1).sum())
            assert len(kept) == len(clean)
        else:
            assert len(kept) == int(clean.sum())
            # the j-th repeat of a row is "<content id>-j": as many as rows repeated j times
            for j in (2, 3):
                assert kept["id"].str.endswith(f"-{j}").sum() == int((clean >= j).sum())
        assert got == want
        assert kept["id"].is_unique
        assert len(kept) + sum(got.values()) == len(pdf)


def test_preprocess_of_a_table_with_ids_caches_its_rows_once(spark, tmp_path: Path) -> None:
    """The ids' window shuffles every row anyway: the repeats are numbered on the same
    rows and they are cached once (cached twice, 20M rows ran out of a 1g heap)."""
    from sparkforge.data.prepare import prepare

    inp = tmp_path / "t.csv"
    inp.write_text("id,age,city,label\na,30,ams,yes\nb,30,ams,no\nc,41,ber,no\nc,41,ber,no\n")
    prep = prepare(spark, _tab_cfg(inp, tmp_path / "r"))
    assert len(prep.cached) == 1
    reasons = sorted(r.reason for r in prep.quarantine.collect())
    assert reasons == ["conflicting_label", "conflicting_label", "duplicate"]


def test_a_larger_table_with_ids_is_cached_in_more_partitions_not_larger_ones(
        spark, tmp_path: Path) -> None:
    """The ids' window shuffles every row and its output is cached: its partitions must
    follow the data's size, not a fixed count. As it is, the table is small: a few
    partitions (not one per shuffle partition). With the merge target shrunk to 16 KB the
    same table is 'large': the cached rows then need far more than 8 partitions (the
    local spark.sql.shuffle.partitions, where a shuffle used to start: 20M rows made
    2.5M-row partitions whose cache ran out of a 768 MB heap)."""
    from sparkforge.data.prepare import prepare

    n = 20_000
    rng = np.random.default_rng(5)
    pdf = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "age": rng.integers(18, 90, n),
                        "city": rng.choice(["ams", "ber", "par"], n), "label": "no"})
    inp = tmp_path / "t.csv"
    pdf.to_csv(inp, index=False)
    small = prepare(spark, _tab_cfg(inp, tmp_path / "r"))
    (rows,) = small.cached
    try:
        assert rows.rdd.getNumPartitions() <= 2  # defaultParallelism: local[2]
    finally:
        rows.unpersist()
    conf = {"spark.sql.adaptive.advisoryPartitionSizeInBytes": "16k",
            "spark.sql.adaptive.coalescePartitions.minPartitionSize": "1k",
            "spark.sql.adaptive.coalescePartitions.parallelismFirst": "false"}
    before = {k: spark.conf.get(k) for k in conf}
    for k, v in conf.items():
        spark.conf.set(k, v)
    prep = None
    try:
        prep = prepare(spark, _tab_cfg(inp, tmp_path / "r"))
        (rows,) = prep.cached
        parts = rows.rdd.getNumPartitions()
        assert rows.count() == n
    finally:
        for k, v in before.items():
            spark.conf.set(k, v)
        for frame in prep.cached if prep else ():
            frame.unpersist()
    assert parts > 8, parts


def test_a_table_of_categorical_columns_only_gets_a_drift_reference(spark, tmp_path: Path
                                                                    ) -> None:
    """No numeric column: the reference holds the categorical columns' fractions (counted
    with Python from the input) and no numeric sample is drawn."""
    rng = np.random.default_rng(3)
    n = 240
    pdf = pd.DataFrame({"id": [f"r{i}" for i in range(n)],
                        "city": rng.choice(["ams", "ber", "par"], n),
                        "colour": rng.choice(["red", "blue"], n),
                        "label": ""})
    pdf["label"] = np.where(pdf["city"] == "ams", "yes", "no")  # no conflicting labels
    inp = tmp_path / "cats.csv"
    pdf.to_csv(inp, index=False)
    out = tmp_path / "run"
    summary = run_preprocess(spark, _tab_cfg(inp, out))
    assert summary["numeric_columns"] == []
    ref = read_json(out / "model" / "reference.json")
    assert set(ref) == {"city", "colour"}
    splits = pq.read_table(out / "preprocessed", columns=["id", "split"]).to_pandas()
    train = pdf.merge(splits[splits["split"] == "train"], on="id")
    want = (train["city"].value_counts() / len(train)).to_dict()
    assert ref["city"]["fractions"] == pytest.approx(want)
