"""``arrow_udf`` on every supported pyspark, from the 4.0 floor up.

pyspark 4.1 added ``pyspark.sql.functions.arrow_udf``: the UDF receives and returns
``pyarrow.Array`` batches with no pandas in between, which the tabular encoder, the
tokenizer and the text dedupe key are written against. pyspark 4.0 (the floor that
pyproject.toml declares, and what older managed runtimes ship) has only ``pandas_udf``;
there the same function runs inside a ``pandas_udf`` that converts each batch from pandas
to Arrow on the way in and back on the way out. The results are the same; the fallback
only pays the conversions.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

_Fn = Callable[..., Any]


def has_native_arrow_udf() -> bool:
    """Whether this pyspark has ``functions.arrow_udf`` (4.1 and later)."""
    from pyspark.sql import functions

    return hasattr(functions, "arrow_udf")


def arrow_udf(return_type: str) -> Callable[[_Fn], Any]:
    """A decorator: ``fn(*pa.Array) -> pa.Array`` as a Spark scalar UDF of
    ``return_type``, a DDL string; a struct is spelled ``struct<name:type,...>`` and the
    function returns a ``pa.StructArray``."""

    def wrap(fn: _Fn) -> Any:
        import pyarrow as pa

        names = list(inspect.signature(fn).parameters)
        if has_native_arrow_udf():
            from pyspark.sql.functions import arrow_udf as native

            # Spark reads the UDF kind from the type hints: real types, not strings.
            fn.__annotations__ = {**dict.fromkeys(names, pa.Array), "return": pa.Array}
            return native(fn, return_type)  # type: ignore[call-overload]

        import pandas as pd
        from pyspark.sql.functions import pandas_udf

        struct = return_type.replace(" ", "").lower().startswith("struct<")

        @functools.wraps(fn)
        def _via_pandas(*series: Any) -> Any:
            out = fn(*(pa.Array.from_pandas(s) for s in series))
            if struct:  # a scalar pandas UDF returns a struct as a DataFrame
                return pd.DataFrame({f.name: out.field(i).to_pandas()
                                     for i, f in enumerate(out.type)})
            return out.to_pandas()

        _via_pandas.__annotations__ = {
            **dict.fromkeys(names, pd.Series),
            "return": pd.DataFrame if struct else pd.Series}
        return pandas_udf(_via_pandas, return_type)  # type: ignore[call-overload]

    return wrap
