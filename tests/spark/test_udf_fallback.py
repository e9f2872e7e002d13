"""``sparkforge.spark.udf.arrow_udf``: the pandas_udf fallback (pyspark 4.0, which has no
``arrow_udf``) gives exactly the native Arrow UDF's results, for the tokenizer (a struct
result) and the text dedupe key. (The tabular encoder is Spark SQL: no UDF.) The fallback
is forced here by making the check answer False; the floor lane
(tests/spark/test_floor_pipeline.py) runs it for real on pyspark 4.0.5."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from pyspark.sql import functions as F

from sparkforge.spark import udf as udf_mod
from sparkforge.tokenize import dedupe_key, tokenize_df, train_wordpiece


def _both(monkeypatch: pytest.MonkeyPatch, build: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    assert udf_mod.has_native_arrow_udf()  # the main venv's pyspark has it
    native = build().toPandas()
    with monkeypatch.context() as m:
        m.setattr(udf_mod, "has_native_arrow_udf", lambda: False)
        fallback = build().toPandas()
    return native, fallback


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b) > 0
    for c in a.columns:
        assert [None if v is None else list(v) if hasattr(v, "__len__") and not
                isinstance(v, str) else v for v in a[c]] == \
               [None if v is None else list(v) if hasattr(v, "__len__") and not
                isinstance(v, str) else v for v in b[c]], c


def test_tokenizer_and_dedupe_key_fallback_equal_native(
        spark: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = ["The film was  GREAT", "ｆｕｌｌ width text", None, "a dull, tedious plot",
             "Ünïcödé  and\tspaces"] * 8
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "id int, text string")
    doc = train_wordpiece([t for t in texts if t], vocab_size=120, max_length=12).to_str()
    native, fallback = _both(monkeypatch, lambda: tokenize_df(df, doc)
                             .withColumn("key", dedupe_key(F.col("text"))).orderBy("id"))
    _same(native, fallback)
    assert native["key"][0] == "the film was great"
