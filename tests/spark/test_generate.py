"""``sparkforge generate``: exact row counts, the same table whatever the partitioning,
and a signal a scikit-learn model learns (checked on the written files, read back with
pyarrow, not through the generator)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as ds
import pytest

from sparkforge.cli import EXIT_CONFIG, main
from sparkforge.generate import write_synthetic


def _read(path: Path) -> Any:
    return ds.dataset(str(path), format="parquet").to_table().to_pandas()


def _split(n: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.random.default_rng(0).permutation(n)
    return idx[: n * 2 // 3], idx[n * 2 // 3:]


@pytest.mark.parametrize("task", ["tabular_classification", "tabular_regression"])
def test_tabular_table_is_exact_deterministic_and_learnable(spark: Any, tmp_path: Path,
                                                            task: str) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    n = 4000
    write_synthetic(spark, n, task, str(tmp_path / "a"), partitions=3)
    write_synthetic(spark, n, task, str(tmp_path / "b"), partitions=7)
    write_synthetic(spark, n, task, str(tmp_path / "c"), partitions=3, seed=1)
    a, b, c = (_read(tmp_path / x).sort_values("id").reset_index(drop=True) for x in "abc")
    assert len(a) == n
    assert a["id"].nunique() == n
    assert a.equals(b)  # the partitioning does not change a value
    assert not a.drop(columns="id").equals(c.drop(columns="id"))  # the seed does
    nums = [col for col in a.columns if col.startswith("num_")]
    cats = [col for col in a.columns if col.startswith("cat_")]
    assert len(nums) == 6
    assert len(cats) == 4
    assert 0.003 < a["num_00"].isna().mean() < 0.03
    assert 0.003 < a["cat_00"].isna().mean() < 0.03
    assert a["cat_03"].nunique() > 100  # a long tail
    # Scales differ by orders of magnitude: the pipeline's encoder must standardise.
    stds = a[nums].std()
    assert stds.max() / stds.min() > 1e4

    prep = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(), StandardScaler()), nums),
        ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value="?"),
                              OneHotEncoder(handle_unknown="ignore")), cats)])
    tr, te = _split(n)
    if task == "tabular_classification":
        y = (a["label"] == "yes").to_numpy()
        assert 0.25 < y.mean() < 0.55
        model = make_pipeline(prep, LogisticRegression(max_iter=2000))
        model.fit(a.iloc[tr], y[tr])
        acc = float((model.predict(a.iloc[te]) == y[te]).mean())
        majority = max(y[te].mean(), 1 - y[te].mean())
        assert acc > majority + 0.1, (acc, majority)
    else:
        y = a["target"].to_numpy()
        assert 80 < y.mean() < 120
        model = make_pipeline(prep, Ridge())
        model.fit(a.iloc[tr], y[tr])
        resid = y[te] - model.predict(a.iloc[te])
        r2 = 1 - resid.var() / y[te].var()
        assert r2 > 0.7, r2


def test_text_table_is_learnable(spark: Any, tmp_path: Path) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    n = 3000
    write_synthetic(spark, n, "text_classification", str(tmp_path / "t"), fmt="csv")
    import pandas as pd

    t = pd.concat(pd.read_csv(p) for p in sorted((tmp_path / "t").glob("part-*.csv")))
    assert len(t) == n
    assert t["id"].nunique() == n
    words = t["text"].str.split().str.len()
    assert words.min() >= 8
    assert words.max() <= 47
    y = (t["label"] == "pos").to_numpy()
    assert 0.45 < y.mean() < 0.55
    tr, te = _split(n)
    model = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=1000))
    model.fit(t["text"].iloc[tr], y[tr])
    acc = float((model.predict(t["text"].iloc[te]) == y[te]).mean())
    assert acc > 0.9, acc


@pytest.mark.parametrize(("args", "said"), [
    (["--rows", "0"], "--rows 0"),
    (["--rows", "5", "--conf", "spark.x"], "use KEY=VALUE"),
    (["--rows", "5", "--master", "bogus://x"], "not a Spark master URL"),
])
def test_generate_argument_errors_exit_2_before_spark(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], said: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPARKFORGE_MASTER", raising=False)
    code = main(["generate", *args, "--task", "text_classification",
                 "--out", str(tmp_path / "x")])
    assert code == EXIT_CONFIG
    assert said in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
