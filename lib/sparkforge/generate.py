"""Synthetic tables of any size with a learnable signal, written by Spark in parallel.

``sparkforge generate --rows N --task TASK --out DIR`` (or :func:`write_synthetic`) writes
a table the pipeline reads like any user's: the benchmarks at 1M-20M rows and tests that
need a table of a known shape use it.

Every value is a function of the row number and the seed only (hashes, not ``rand()``):
the same ``--rows`` and ``--seed`` give the same table whatever the partitioning, the
master or the number of executors, and nothing is built on the driver: the rows come from
``spark.range`` and plain column expressions, so it runs unchanged over Spark Connect.

Tables (``id`` is ``r<row number>``):

- ``tabular_classification`` / ``tabular_regression``: ``num_00``.. (doubles, standard
  normal times a per-column scale, 1% nulls in ``num_00``), ``cat_00``.. (strings with a
  heavy head and a long tail: cardinalities 4, 12, 60, 400, ...; 1% nulls in ``cat_00``),
  and ``label`` (``yes``/``no``, about 40% ``yes``) or ``target`` (a double around 100);
  the signal is a linear function of three numeric columns and two categorical ones,
  plus noise.
- ``text_classification``: ``text`` (8-47 words from a neutral vocabulary, about a quarter
  of them drawn from the label's own words, a few from the other label's) and ``label``
  (``pos``/``neg``, half each).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Literal, get_args

from sparkforge.config import TaskName

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

TASKS: tuple[str, ...] = get_args(TaskName)
CARDINALITIES = (4, 12, 60, 400, 2000)
_HASH_BITS = 30


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_NEUTRAL = _words(
    "the a an and or but of to in on at for with from by about as into over after "
    "film story plot scene scenes actor actors cast director script camera screen music "
    "score dialogue ending start middle minute minutes hour hours time times year years "
    "character characters role roles moment moments picture movie movies drama comedy "
    "thriller genre audience viewers critics theater version sequel original series "
    "part parts way ways thing things people life world city night day family friend "
    "house road town war love money game team work school car water light room door "
    "it this that these those there here then now still just also even only very quite "
    "rather really often never always sometimes again almost enough perhaps")
_POSITIVE = _words(
    "brilliant moving delightful superb charming gripping touching funny clever sharp "
    "beautiful warm engaging stunning fresh vivid honest tender witty masterful "
    "compelling joyful elegant graceful inventive")
_NEGATIVE = _words(
    "dull tedious clumsy bland awkward boring messy shallow lifeless forgettable "
    "predictable tiresome flat stale sloppy dreary hollow grating muddled pointless "
    "plodding labored trite inert lazy")


def _u(row: Column, seed: int, salt: str, extra: Column | None = None) -> Column:
    """A uniform in (0, 1) from a hash of (row, seed, salt[, extra]): deterministic
    whatever the partitioning, unlike ``rand()``."""
    from pyspark.sql import functions as F

    parts = [row, F.lit(seed), F.lit(salt), *([extra] if extra is not None else [])]
    scale = float(1 << _HASH_BITS)
    return (F.pmod(F.xxhash64(*parts), F.lit(1 << _HASH_BITS)) + F.lit(0.5)) / F.lit(scale)


def _normal(row: Column, seed: int, salt: str) -> Column:
    """A standard normal (Box-Muller over two hashed uniforms)."""
    from pyspark.sql import functions as F

    u1, u2 = _u(row, seed, salt + "/1"), _u(row, seed, salt + "/2")
    return F.sqrt(F.lit(-2.0) * F.log(u1)) * F.cos(F.lit(2 * math.pi) * u2)


def synthetic_df(spark: SparkSession, rows: int, task: str, *, seed: int = 0,
                 partitions: int = 0, num_cols: int = 6, cat_cols: int = 4) -> DataFrame:
    """The synthetic table as a DataFrame (lazy: nothing runs until it is written).

    ``partitions``: 0 picks one per million rows, at least the session's parallelism."""
    from pyspark.sql import functions as F

    from sparkforge.spark.session import default_parallelism

    if rows < 1:
        raise ValueError(f"rows={rows}: use a positive number of rows")
    if task not in TASKS:
        raise ValueError(f"task={task!r}: use one of {', '.join(TASKS)}")
    if task != "text_classification" and (num_cols < 3 or cat_cols < 2):
        raise ValueError(f"num_cols={num_cols}, cat_cols={cat_cols}: the signal needs at "
                         "least 3 numeric and 2 categorical columns")
    parts = partitions or max(default_parallelism(spark), math.ceil(rows / 1_000_000))
    # The row number is renamed: the output's own ``id`` alias would otherwise shadow it
    # inside the text's lambda (a lateral column alias), giving other hashes there.
    base = spark.range(0, rows, 1, parts).select(F.col("id").alias("_row"))
    n = F.col("_row")
    row_id = F.concat(F.lit("r"), n.cast("string")).alias("id")
    if task == "text_classification":
        return base.select(row_id, _text(n, seed).alias("text"),
                           F.when(_u(n, seed, "label") < 0.5, "pos").otherwise("neg")
                           .alias("label"))

    nums = [_normal(n, seed, f"num{i}") for i in range(num_cols)]
    # Log-uniform codes: code 0 is the most frequent, a long tail of rare values.
    codes = [F.floor(F.exp(_u(n, seed, f"cat{i}") *
                           F.lit(math.log(CARDINALITIES[i % len(CARDINALITIES)])))) - 1
             for i in range(cat_cols)]
    signal = (nums[0] - F.lit(0.8) * nums[1] + F.lit(0.5) * nums[2]
              + F.lit(1.2) * (F.pmod(codes[0], F.lit(3)) == 1).cast("double")
              - F.lit(0.9) * (F.pmod(codes[1], F.lit(4)) == 2).cast("double"))
    cols: list[Column] = [row_id]
    for i, v in enumerate(nums):
        # Per-column scales from 0.01 to 1000: the encoder must standardise them.
        value = F.round(v * F.lit(10.0 ** (i % 6 - 2)) + F.lit(float(10 * (i % 3))), 4)
        if i == 0:
            value = F.when(_u(n, seed, "null-num") >= 0.01, value)
        cols.append(value.alias(f"num_{i:02d}"))
    for i, c in enumerate(codes):
        value = F.concat(F.lit(f"c{i}_"), c.cast("string"))
        if i == 0:
            value = F.when(_u(n, seed, "null-cat") >= 0.01, value)
        cols.append(value.alias(f"cat_{i:02d}"))
    if task == "tabular_regression":
        noise = _normal(n, seed, "noise")
        cols.append(F.round(F.lit(100.0) + F.lit(20.0) * (signal + F.lit(0.5) * noise), 4)
                    .alias("target"))
    else:
        prob = F.lit(1.0) / (F.lit(1.0) + F.exp(-(F.lit(2.0) * signal - F.lit(0.6))))
        cols.append(F.when(_u(n, seed, "label") < prob, "yes").otherwise("no").alias("label"))
    return base.select(*cols)


def _text(n: Column, seed: int) -> Column:
    """8-47 words: neutral ones, about a quarter from the label's words, a few (1 in 5 of
    those) from the other label's."""
    from pyspark.sql import functions as F

    def pick(words: tuple[str, ...] | list[str], u: Column) -> Column:
        arr = F.array(*[F.lit(w) for w in words])
        return F.element_at(arr, (F.floor(u * F.lit(len(words))) + 1).cast("int"))

    positive = _u(n, seed, "label") < 0.5
    length = (F.floor(_u(n, seed, "length") * F.lit(40)) + 8).cast("int")

    def word(i: Column) -> Column:
        kind, choice = _u(n, seed, "kind", i), _u(n, seed, "word", i)
        own = F.when(positive, pick(_POSITIVE, choice)).otherwise(pick(_NEGATIVE, choice))
        other = F.when(positive, pick(_NEGATIVE, choice)).otherwise(pick(_POSITIVE, choice))
        return (F.when(kind < 0.20, own).when(kind < 0.25, other)
                .otherwise(pick(_NEUTRAL, choice)))

    return F.array_join(F.transform(F.sequence(F.lit(1), length), word), " ")


def write_synthetic(spark: SparkSession, rows: int, task: str, out: str, *,
                    fmt: Literal["parquet", "csv"] = "parquet", seed: int = 0,
                    partitions: int = 0) -> int:
    """Write the table to ``out`` (replaced) as Parquet or CSV with a header; returns
    ``rows``. The executors write their own partitions: nothing passes the driver."""
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"format={fmt!r}: use parquet or csv")
    df = synthetic_df(spark, rows, task, seed=seed, partitions=partitions)
    writer = df.write.mode("overwrite")
    if fmt == "csv":
        writer.option("header", "true").csv(out)
    else:
        writer.parquet(out)
    log.info("wrote %d synthetic %s rows to %s (%s)", rows, task, out, fmt)
    return rows
