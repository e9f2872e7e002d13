"""Categoricals of any cardinality: a 300-value column is encoded (vocabulary + hashed
tail + null slot) in training and at scoring alike, never quarantined, and its rare
values still carry signal (checked with scikit-learn on the encoded features)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _train_helpers import encode_dense, read_preprocessed

from sparkforge import features
from sparkforge.artifacts import read_json
from sparkforge.config import load_config
from sparkforge.data.prepare import Fitted, prepare
from sparkforge.jobs.preprocess import run_preprocess

ROOT = Path(__file__).resolve().parents[2]
N_ROWS, N_VALUES = 3000, 300


@pytest.fixture(scope="module")
def wide_run(spark, tmp_path_factory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("wide")
    rng = np.random.default_rng(3)
    codes = rng.integers(0, N_VALUES, N_ROWS)
    good = rng.random(N_VALUES) < 0.5  # each value's own label tendency: the signal
    y = rng.random(N_ROWS) < np.where(good[codes], 0.9, 0.1)
    raw = pd.DataFrame({"id": [f"r{i}" for i in range(N_ROWS)],
                        "noise": np.round(rng.normal(0, 1, N_ROWS), 4),
                        "city": [f"c{c:03d}" for c in codes],
                        "label": np.where(y, "yes", "no")})
    inp = tmp / "wide.csv"
    raw.to_csv(inp, index=False)
    out = tmp / "run"
    cfg = load_config(ROOT / "conf" / "tabular_classification.yaml",
                      [f"data.input={inp}", "data.label_column=label", "data.id_column=id",
                       f"output.dir={out}"])
    summary = run_preprocess(spark, cfg)
    pre = read_preprocessed(out / "preprocessed", ["id", "split", "features", "label_index"])
    return {"cfg": cfg, "raw": raw, "summary": summary, "pre": pre,
            "stats": read_json(out / "model" / "preprocessor.json")}


def test_counts_of_kept_and_hashed_values_are_recorded(wide_run) -> None:  # type: ignore[no-untyped-def]
    raw, pre, stats = wide_run["raw"], wide_run["pre"], wide_run["stats"]
    train = raw.merge(pre[["id", "split"]], on="id")
    train = train[train["split"] == "train"]
    counts = train["city"].value_counts()
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    k = features.MAX_CATEGORIES
    vocab = [v for v, _ in ranked[:k]]
    expected = {"kept_values": k, "hashed_values": len(ranked) - k,
                "hashed_rows": int(sum(n for _, n in ranked[k:])), "null_rows": 0,
                "rows": len(train)}
    assert stats["categorical"]["city"] == vocab
    assert stats["categorical_counts"]["city"] == expected
    enc = wide_run["summary"]["categorical_encoding"]
    assert enc["columns"]["city"] == expected
    assert enc["max_categories"] == k
    assert read_json(wide_run["cfg"].out / "manifest.json")["preprocess"][
        "categorical_encoding"]["columns"]["city"] == expected


def test_every_training_row_and_unseen_values_score_without_quarantine(
        spark, wide_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg, stats = wide_run["cfg"], wide_run["stats"]
    # The training table plus rows with values never seen in training.
    table = pd.concat([wide_run["raw"], pd.DataFrame(
        {"id": ["u1", "u2"], "noise": [0.1, 0.2], "city": ["never-seen", "also-new"],
         "label": ["yes", "no"]})])
    inp = tmp_path / "score.csv"
    table.to_csv(inp, index=False)
    fitted = Fitted(labels=["no", "yes"], numeric=list(stats["numeric"]),
                    categories=dict(stats["categorical"]))
    prep = prepare(spark, cfg, stage="score", fitted=fitted, input_path=str(inp))
    assert prep.quarantine.count() == 0
    encoded = encode_dense(prep.kept, stats, ["id"])
    assert len(encoded) == len(table) == N_ROWS + 2
    # Unseen values land, deterministically, in the hashed bucket their hash names.
    k, b = len(stats["categorical"]["city"]), stats["categorical_buckets"]["city"]
    for vid, value in (("u1", "never-seen"), ("u2", "also-new")):
        row = np.asarray(encoded.loc[encoded["id"] == vid, "features"].iloc[0])
        block = row[1:]  # after the one numeric column
        assert block.sum() == 1.0
        assert int(np.argmax(block)) == k + features.bucket_of(value, b)
    # And scoring re-encodes training rows exactly as preprocess did.
    merged = encoded.merge(wide_run["pre"][["id", "features"]], on="id",
                           suffixes=("_score", "_train"))
    assert len(merged) == N_ROWS
    np.testing.assert_array_equal(np.stack(merged["features_score"].to_numpy()),
                                  np.stack(merged["features_train"].to_numpy()))


def test_rare_values_carry_signal(wide_run) -> None:  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    pre, stats = wide_run["pre"], wide_run["stats"]
    x = np.stack(pre["features"].to_numpy())
    y = pre["label_index"].to_numpy()
    tr, te = (pre["split"] == "train").to_numpy(), (pre["split"] != "train").to_numpy()
    with_col = LogisticRegression(max_iter=2000).fit(x[tr], y[tr])
    without = LogisticRegression(max_iter=2000).fit(x[tr][:, :1], y[tr])
    acc_with = (with_col.predict(x[te]) == y[te]).mean()
    acc_without = (without.predict(x[te][:, :1]) == y[te]).mean()
    assert acc_with > acc_without + 0.15
    # Rows whose value is outside the vocabulary: right more often than chance and than
    # a model that sees only the vocabulary (one shared "other" slot for the rest).
    k = len(stats["categorical"]["city"])
    tail = te & (x[:, 1:1 + k].sum(axis=1) == 0)
    assert tail.sum() > 200
    vocab_only = np.concatenate([x[:, :1 + k], x[:, 1 + k:].sum(axis=1, keepdims=True)], 1)
    coarse = LogisticRegression(max_iter=2000).fit(vocab_only[tr], y[tr])
    acc_tail = (with_col.predict(x[tail]) == y[tail]).mean()
    acc_tail_coarse = (coarse.predict(vocab_only[tail]) == y[tail]).mean()
    assert acc_tail > 0.6
    assert acc_tail > acc_tail_coarse + 0.05


def test_drift_profile_counts_every_column_in_one_job(spark) -> None:  # type: ignore[no-untyped-def]
    """Bin and category fractions equal those counted with pandas (nulls included)."""
    from sparkforge.metrics.drift import profile

    rng = np.random.default_rng(5)
    n = 400
    pdf = pd.DataFrame({"x": rng.normal(0, 1, n), "c": rng.choice(["a", "b", "c", "d"], n)})
    pdf.loc[rng.random(n) < 0.1, "x"] = None
    pdf.loc[rng.random(n) < 0.1, "c"] = None
    edges = [-1.0, 0.0, 1.0]
    got = profile(spark.createDataFrame(pdf), {"x": edges}, ["c"], total=n, max_categories=3)
    x = pdf["x"].to_numpy()
    bins = [np.sum(x < -1), np.sum((x >= -1) & (x < 0)), np.sum((x >= 0) & (x < 1)),
            np.sum(x >= 1), np.sum(np.isnan(x))]
    assert got["x"]["fractions"] == pytest.approx([b / n for b in bins])
    vc = pdf["c"].fillna("\u2400").value_counts()
    top = sorted(vc.items(), key=lambda kv: (-kv[1], kv[0] != "\u2400", kv[0]))[:3]
    assert got["c"]["fractions"] == pytest.approx({v: k / n for v, k in top})


def test_drift_reference_from_the_encoder_counts_equals_pandas(spark) -> None:  # type: ignore[no-untyped-def]
    """Preprocess builds the categorical drift reference from the encoder fit's value
    counts (nulls skipped, top 128) instead of counting again: 80 values (more than the
    reference's 50), ties among the rare ones and a rare null, against pandas."""
    from sparkforge.metrics.drift import categorical_fractions

    rng = np.random.default_rng(11)
    n = 600
    pdf = pd.DataFrame({"c": rng.choice([f"v{i:02d}" for i in range(80)], n),
                        "x": rng.normal(0, 1, n)})
    pdf.loc[rng.random(n) < 0.012, "c"] = None
    _, counts = features.fit_with_counts(spark.createDataFrame(pdf), ["x"], ["c"])
    vc = pdf["c"].fillna("\u2400").value_counts()
    top = sorted(vc.items(), key=lambda kv: (-kv[1], kv[0] != "\u2400", kv[0]))[:50]
    assert "\u2400" in dict(top)  # the null ties with values and still takes its place
    got = categorical_fractions(counts["c"])["fractions"]
    assert got == pytest.approx({v: k / n for v, k in top})


def test_compact_form_expands_to_the_dense_encoding(spark) -> None:  # type: ignore[no-untyped-def]
    """``compact`` (native Spark SQL: map lookups, Spark's crc32) then ``expand`` gives,
    bit for bit, the one-hot built here row by row from the fitted statistics (zlib's
    crc32): vocabulary values, hashed tail values (some never seen in training, some
    non-ASCII or with quotes), nulls, and numeric nulls (imputed with the mean)."""
    import zlib

    rng = np.random.default_rng(5)
    n = 400
    values = [f"v{i}" for i in range(40)] + ["é ü", "it's", "a\\b", "日本"]
    pdf = pd.DataFrame({"id": [f"r{i}" for i in range(n)],
                        "x": rng.normal(10, 3, n), "z": rng.normal(0, 1e4, n),
                        "c": rng.choice(values, n), "d": rng.choice(["p", "q"], n)})
    pdf.loc[rng.random(n) < 0.05, "x"] = None
    pdf.loc[rng.random(n) < 0.05, "c"] = None
    df = spark.createDataFrame(pdf)
    stats = features.fit(df.limit(300), ["x", "z"], ["c", "d"], max_categories=8,
                         hash_buckets=5)
    unseen = pd.DataFrame({"id": ["u1", "u2"], "x": [1.0, None], "z": [0.0, 2.0],
                           "c": ["never seen", "日本語"], "d": ["r", None]})
    df = df.unionByName(spark.createDataFrame(unseen))
    comp = features.compact(df, stats).select("id", *features.COMPACT).toPandas()
    assert list(comp["id"]) == [*pdf["id"], "u1", "u2"]
    assert set(comp[features.DIM]) == {stats["dim"]}
    got = features.expand(np.stack(comp[features.VALUES].to_numpy()).astype(np.float32),
                          np.stack(comp[features.SLOTS].to_numpy()), stats["dim"])

    # The reference: one-hot written out from the statistics, row by row.
    full = pd.concat([pdf, unseen], ignore_index=True)
    ref = np.zeros((len(full), stats["dim"]), dtype=np.float32)
    for i, row in full.iterrows():
        j = 0
        for c in ("x", "z"):
            m, s = stats["numeric"][c]["mean"], stats["numeric"][c]["std"]
            v = m if pd.isna(row[c]) else row[c]
            ref[i, j] = np.float32((v - m) / s)
            j += 1
        for c in ("c", "d"):
            vocab, b = stats["categorical"][c], stats["categorical_buckets"][c]
            if row[c] is None:
                pos = len(vocab) + b
            elif row[c] in vocab:
                pos = vocab.index(row[c])
            else:
                pos = len(vocab) + zlib.crc32(row[c].encode("utf-8")) % b
            ref[i, j + pos] = 1.0
            j += len(vocab) + b + 1
    np.testing.assert_array_equal(got, ref)
    assert (got[:, 2:].sum(axis=1) == 2).all()  # one slot per categorical column


def test_compress_samples_collect_the_compact_rows_not_the_dense_vector(
        spark, wide_run, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """compress's samples to the driver (calibration, the baseline's 200k train rows) bring
    the compact columns through Spark and expand them on the driver: at c93e49c they
    collected the dense one-hot row, and on a 300k x 40 table (821 floats a row) the
    driver JVM ran out of heap and the stage hung. The expanded rows are rows of the split
    as the training loader reads it."""
    from sparkforge.compress.measure import sample_split
    from sparkforge.train.loader import read_split

    collected: list[list[str]] = []
    frame = type(spark.range(1))  # pyspark 4: the classic subclass defines toPandas
    real = frame.toPandas

    def spy(self: Any) -> Any:
        collected.append(list(self.columns))
        return real(self)

    monkeypatch.setattr(frame, "toPandas", spy)
    cfg, stats = wide_run["cfg"], wide_run["stats"]
    got = sample_split(spark, cfg, "train", 500, ["features", "label_index"])
    assert collected == [[*features.COMPACT, "label_index"]]
    x = got["features"]
    assert x.dtype == np.float32
    assert x.shape[1] == stats["dim"]
    assert 300 < len(x) <= 500
    assert (x[:, 1:].sum(axis=1) == 1).all()  # the one categorical column: one slot set
    train = read_split(cfg.out / "preprocessed" / "split=train", ["features", "label_index"])
    rows = {(tuple(f), int(y)) for f, y in zip(train["features"], train["label_index"],
                                                strict=True)}
    assert all((tuple(f), int(y)) in rows for f, y in zip(x, got["label_index"], strict=True))


def test_drift_on_a_bounded_sample_is_stable_and_close_to_counting_every_row(  # type: ignore[no-untyped-def]
        spark, monkeypatch) -> None:
    """The sample is chosen by the ids alone (the same rows after repartitioning), holds
    about SAMPLE_ROWS rows, and its PSI against a reference is the full table's within
    sampling error; a shifted column is still flagged."""
    from pyspark.sql import functions as F

    from sparkforge.metrics import drift

    n = 4 * drift.SAMPLE_ROWS

    def table(seed: int, shift: float):  # type: ignore[no-untyped-def]
        return spark.range(n).select(
            F.concat(F.lit("r"), F.col("id").cast("string")).alias("id"),
            F.randn(seed).alias("x"), (F.randn(seed + 1) + shift).alias("shifted"))

    df = table(3, 0.5).cache()
    s1 = drift.bounded_sample(df, n).select("id")
    s2 = drift.bounded_sample(df.repartition(7), n).select("id")
    k = s1.count()
    assert abs(k - drift.SAMPLE_ROWS) < 0.03 * drift.SAMPLE_ROWS
    assert s1.exceptAll(s2).count() == 0
    assert s2.count() == k
    assert drift.bounded_sample(df, drift.SAMPLE_ROWS) is df  # small tables: every row
    edges = [-1.5, -0.5, 0.0, 0.5, 1.5]
    ref = drift.profile(table(9, 0.0), {"x": edges, "shifted": edges}, [], total=n)
    sampled = drift.drift_report(ref, df, 0.1, total=n)
    monkeypatch.setattr(drift, "SAMPLE_ROWS", 10 * n)  # every row
    full = drift.drift_report(ref, df, 0.1, total=n)
    assert sampled["counted_on"].startswith("a seeded sample")
    assert full["counted_on"] == "every row"
    assert sampled["psi"]["x"] == pytest.approx(full["psi"]["x"], abs=2e-3)
    assert sampled["psi"]["shifted"] == pytest.approx(full["psi"]["shifted"], rel=0.1)
    assert sampled["drifted"] == full["drifted"] == ["shifted"]
    df.unpersist()

