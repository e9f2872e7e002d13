"""Read raw input, quarantine bad records with a reason, clean, derive ids, split.

Every row read ends up either kept or in quarantine with a reason:
``rows_in == rows_kept + rows_quarantined`` (checked, and recorded in the manifest).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sparkforge.config import Config, ConfigError
from sparkforge.data.readers import CORRUPT, read_raw

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

REASON = "reason"
SPLITS = ("train", "val", "test")
# Validation rows are cut in two by a seeded hash of the id: fold 0 chooses (the kept
# epoch, early stopping, fine-tune and distillation epochs), fold 1 judges (the
# compression gate, the baseline comparison), so no variant is judged on rows that chose it.
FOLD = "fold"
SELECT_FOLD, GATE_FOLD = 0, 1
# Fraction of non-null values that must parse as numbers for a string column to be numeric
# ("most of its values"); the rows whose values don't parse are quarantined as bad_type.
NUMERIC_MIN_FRACTION = 0.9
# Spellings of "missing" in exported tables (UCI's '?', R's NA, pandas' NaN, ...): in a
# numeric column they are nulls (imputed), not bad values that would make it categorical.
NULL_TOKENS = ("?", "na", "n/a", "null", "none", "-", "--", "")
# At scoring, a numeric value further than this many training standard deviations from
# the training mean is quarantined (out_of_range): no finite but absurd value (1e30 from a
# unit mix-up) reaches the model, whose score for it would mean nothing. (int8_dynamic
# quantises each row on its own, so such a row no longer coarsens its batch's other rows.)
MAX_ABS_Z = 1000.0
# Row number of the cached rows, which the repeats' numbers are joined back on.
ROW = "_sf_row"
# Up to this many later or conflicting repeats (a row number, a number and a flag each,
# about 40 bytes in the broadcast) are broadcast to the join; more are joined by a shuffle.
BROADCAST_REPEATS = 2_000_000
# Quarantine reasons that record a policy, not a defect: they are reported, and they do
# not count against preprocess.max_quarantine_fraction.
POLICY_REASONS = ("duplicate", "conflicting_label")


class DataQualityError(RuntimeError):
    """Too many rows were quarantined (CLI exit code 3)."""


@dataclass(frozen=True)
class Fitted:
    """What training saw, re-applied when scoring a new table (from ``model/``)."""

    labels: list[str]                      # empty for regression
    numeric: list[str]
    categories: dict[str, list[str]]       # categorical column -> known categories
    quarantine_unseen_categories: bool = False
    # numeric column -> (train mean, train std), for the out_of_range check at scoring
    numeric_stats: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Prepared:
    kept: DataFrame          # id, label, split, + text or the feature columns
    quarantine: DataFrame    # stage, reason, id, raw
    # every row read, kept or quarantined (read from ``cached``): what a stage counts its
    # rows in from
    rows: DataFrame
    numeric_columns: list[str]
    categorical_columns: list[str]
    # how each inferred column's type was decided: {col: {type, non_null, parsed}}
    type_evidence: dict[str, dict[str, object]] = field(default_factory=dict)
    # Every row read, projected as ``kept`` is, with its ``reason`` (null when kept): one
    # aggregation grouped by reason counts the quarantine and summarises the kept rows.
    # None when the split is stratified: then ``kept`` is a window over the kept rows (a
    # shuffle), not a projection of the cached ``rows``, and a stage reading it more than
    # once caches it.
    projected: DataFrame | None = None
    # The frames cached for ``rows`` (unpersist them when done)
    cached: tuple[DataFrame, ...] = ()


def q(name: str) -> str:
    """A column name quoted for a Spark SQL expression (backticks doubled)."""
    return "`" + name.replace("`", "``") + "`"


def sql_str(value: str) -> str:
    """A Python string as a Spark SQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_double(value: float) -> str:
    return f"CAST({sql_str(repr(float(value)))} AS DOUBLE)"


# The checks below are written as SQL text and turned into one expression with one
# F.expr call: built from Column objects, every function is a round trip to the JVM
# (about a thousand for a 40-column table, most of the driver time of a preprocess run).
_NULL_TOKENS_SQL = ", ".join(sql_str(t) for t in NULL_TOKENS)


def is_blank_sql(c: str) -> str:
    """SQL: the value ``c`` (an SQL expression) is null or blank."""
    return f"({c} IS NULL OR trim(CAST({c} AS STRING)) = '')"


# The first code points a missing-value token can start with once trim() (spaces only) has
# run: '' (ascii gives 0), a space, '-', '?', 'N' or 'n'. Testing it first spares most
# values the lower-cased, trimmed copy and the comparisons (type scan: 3.3 s -> 1 s warm).
_NULL_TOKEN_STARTS = "0, 32, 45, 63, 78, 110"
assert {ord(t[0]) if t else 0 for t in NULL_TOKENS} <= {0, 32, 45, 63, 78, 110}


def is_null_token_sql(c: str) -> str:
    """SQL: null, blank or a conventional spelling of missing ('?', 'NA', 'n/a', ...)."""
    v = f"CAST({c} AS STRING)"
    return (f"({c} IS NULL OR (ascii({v}) IN ({_NULL_TOKEN_STARTS}) "
            f"AND lower(trim({v})) IN ({_NULL_TOKENS_SQL})))")


def as_double_sql(c: str) -> str:
    """SQL: the value as a double; null for missing-value tokens and what does not parse."""
    return (f"CASE WHEN NOT {is_null_token_sql(c)} "
            f"THEN try_cast(trim(CAST({c} AS STRING)) AS DOUBLE) END")


# The first code point of every string that Spark's cast to double accepts: whitespace
# (it trims code points up to U+0020), a sign, a digit or '.' (all at most 57), or the
# 'I'/'i' of infinity and the 'N'/'n' of NaN. A cast that fails costs Spark a thrown
# exception, a few microseconds a value: the type decision's scan of a 300k x 40 CSV spent
# 10 of its 12 s (warm) casting the values of its categorical columns. A value that cannot
# be a number skips the cast. (A regular expression did that too, at twice the cost of
# looking at one code point.)
def may_be_number_sql(c: str) -> str:
    """SQL: false only when the string value ``c`` cannot cast to a double (a cheap test)."""
    v = f"ascii(CAST({c} AS STRING))"
    return f"({v} <= 57 OR {v} IN (73, 78, 105, 110))"


def non_finite_sql(v: str) -> str:
    return f"(isnan({v}) OR abs({v}) = CAST('Infinity' AS DOUBLE))"


def undecodable_sql(c: str) -> str:
    # Spark decodes with data.options.encoding and puts U+FFFD where bytes do not
    # decode: such a value is not the one the user wrote (it would make a new class).
    return f"(instr(CAST({c} AS STRING), '\ufffd') > 0)"


def not_in_sql(c: str, values: list[str]) -> str:
    """SQL: ``c`` (trimmed) is present and not one of ``values``."""
    v = f"trim(CAST({c} AS STRING))"
    known = f" AND NOT {v} IN ({', '.join(sql_str(x) for x in values)})" if values else ""
    return f"(NOT {is_blank_sql(c)}{known})"


def _numeric_columns(df: DataFrame, candidates: list[str]
                     ) -> tuple[list[str], dict[str, dict[str, object]]]:
    """Columns already numeric, or string columns most of whose present values parse as
    numbers; with the evidence for each decision (one pass over the data for all columns)."""
    from pyspark.sql import types as T

    numeric = [c for c in candidates
               if isinstance(df.schema[c].dataType, T.NumericType)]
    strings = [c for c in candidates if isinstance(df.schema[c].dataType, T.StringType)]
    evidence: dict[str, dict[str, object]] = {c: {"type": "numeric", "declared_by": "source"}
                                              for c in numeric}
    if not strings:
        return numeric, evidence
    # One aggregation for all columns, written as SQL text and sent in one JVM call.
    aggs = []
    for i, c in enumerate(strings):
        aggs.append(f"count(CASE WHEN NOT {is_null_token_sql(q(c))} THEN 1 END) AS n{i}")
        # as_double_sql's value, without its missing-value test (no such token passes
        # the number guard) and its trim (the cast trims): both per value and column.
        aggs.append(f"count(CASE WHEN {may_be_number_sql(q(c))} "
                    f"THEN try_cast({q(c)} AS DOUBLE) END) AS ok{i}")
    row = df.selectExpr(*aggs).first()
    assert row is not None
    for i, c in enumerate(strings):
        n, ok = int(row[f"n{i}"]), int(row[f"ok{i}"])
        is_num = bool(n) and ok / n >= NUMERIC_MIN_FRACTION
        if is_num:
            numeric.append(c)
        evidence[c] = {"type": "numeric" if is_num else "categorical", "non_null": n,
                       "parsed_as_number": ok, "bad_values": n - ok if is_num else 0}
    return [c for c in candidates if c in numeric], evidence


def feature_columns(cfg: Config, columns: list[str]) -> list[str]:
    d = cfg.data
    if d.feature_columns:
        return list(d.feature_columns)
    skip = {d.label_column, d.id_column, d.text_column, CORRUPT}
    return [c for c in columns if c not in skip]


def split_column(id_col: Column, train: float, val: float, seed: int) -> Column:
    """train/val/test from a seeded hash of the id alone: stable across reruns and
    repartitioning, since it depends on nothing but the id's value."""
    from pyspark.sql import functions as F

    u = F.pmod(F.xxhash64(F.lit(seed), id_col), F.lit(1_000_000)) / F.lit(1_000_000.0)
    return (F.when(u < train, "train").when(u < train + val, "val").otherwise("test"))


def fold_column(id_col: Column, seed: int) -> Column:
    """0 or 1 from a hash of the id with another seed than the split's (independent of it)."""
    from pyspark.sql import functions as F

    return F.pmod(F.xxhash64(F.lit(seed + 7919), id_col), F.lit(2)).cast("int")


def _declared_numeric(cfg: Config, feats: list[str]) -> dict[str, bool]:
    """Columns whose type ``data.schema`` declares: True when numeric."""
    numeric_types = ("byte", "short", "int", "integer", "long", "bigint", "float", "double",
                     "decimal", "tinyint", "smallint")
    return {c: cfg.data.schema[c].lower().split("(")[0] in numeric_types
            for c in feats if c in cfg.data.schema}


def stratified_split_column(id_col: Column, label_col: Column, train: float, val: float,
                            seed: int) -> Column:
    """Exact per-label proportions: within each label, rows are ordered by the seeded hash
    of their id and cut at the split fractions. Depends only on (label, id) values, so it
    is stable under repartitioning; adding rows can move rows near a cut."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy(label_col).orderBy(F.xxhash64(F.lit(seed), id_col), id_col)
    r = F.percent_rank().over(w)
    return F.when(r < train, "train").when(r < train + val, "val").otherwise("test")


def _dedupe(cfg: Config) -> bool:
    mode = cfg.preprocess.dedupe
    # Exact repeats are legitimate rows in tabular data (many people share a profile);
    # in a text corpus they are copies.
    return mode == "true" or (mode == "auto" and cfg.is_text)


def prepare(spark: SparkSession, cfg: Config, stage: str = "preprocess",
            fitted: Fitted | None = None, input_path: str | None = None,
            keep_columns: list[str] | None = None, raw: DataFrame | None = None,
            number_repeats: bool = True) -> Prepared:
    """Quarantine, clean, id and split ``data.input`` (or ``input_path``, or the
    DataFrame ``raw``: what a Spark ML model's ``transform`` is given).

    With ``fitted`` (scoring), the training's column types, labels and categories are
    re-applied: a missing label column is allowed (unlabeled rows are scored), labels
    never seen in training are quarantined, and rows are not deduped.

    Numbering repeats runs a (small) job at once. ``number_repeats=False`` is for callers
    that output no ids (a Spark ML model's ``transform``, which stays lazy): scored
    repeats of a row without an id column then share their content id.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    d = cfg.data
    if raw is None:
        raw = read_raw(spark, cfg, input_path)
    original = [c for c in raw.columns if c != CORRUPT]
    has_label = d.label_column in raw.columns
    if fitted is None and not has_label:
        raise ConfigError(f"data.label_column={d.label_column!r} is not a column of the input; "
                          f"its columns are {original}")
    label = F.col(d.label_column) if has_label else F.lit(None).cast("string")
    evidence: dict[str, dict[str, object]] = {}
    if fitted is not None:
        numeric = list(fitted.numeric)
        categorical = list(fitted.categories)
        missing = [c for c in numeric + categorical if c not in raw.columns]
        if cfg.is_text and d.text_column not in raw.columns:
            missing.append(str(d.text_column))
        if missing:
            raise ConfigError(f"score.input={input_path or d.input!r}: the table to score lacks "
                              f"the training columns {missing}; its columns are {original}. "
                              "Score a table with the training schema")
        feats = numeric + categorical
    else:
        feats = [] if cfg.is_text else feature_columns(cfg, original)
        declared = _declared_numeric(cfg, feats)
        undeclared = [c for c in feats if c not in declared]
        # CSV gives only strings, so numbers are inferred from the values; JSON and
        # Parquet carry types, and a string there stays categorical.
        if d.format == "csv":
            inferred, evidence = _numeric_columns(raw, undeclared)
        else:
            inferred = [c for c in undeclared
                        if isinstance(raw.schema[c].dataType, T.NumericType)]
            evidence = {c: {"type": "numeric" if c in inferred else "categorical",
                            "declared_by": "source"} for c in undeclared}
        for c, is_num in declared.items():
            evidence[c] = {"type": "numeric" if is_num else "categorical",
                           "declared_by": "data.schema"}
        numeric = [c for c in feats if declared.get(c, c in inferred)]
        categorical = [c for c in feats if c not in numeric]

    # fillna policy first: filled columns never quarantine for nulls.
    df = raw
    for col, value in cfg.preprocess.fillna.items():
        df = df.withColumn(col, F.coalesce(F.col(col).cast("string"), F.lit(value))
                           .cast(df.schema[col].dataType))

    # Each numeric column parsed once, into a double beside the raw value: the checks
    # and the kept frame read the double (Spark does not re-inline an expression that its
    # consumer uses more than once, so the parse is not repeated per check).
    parsed: dict[str, str] = {}
    present: dict[str, str] = {}
    to_parse = list(numeric) + ([d.label_column] if cfg.is_regression and has_label else [])
    extra = []
    for i, c in enumerate(dict.fromkeys(to_parse)):
        parsed[c], present[c] = f"_sf_d{i}", f"_sf_p{i}"
        if isinstance(df.schema[c].dataType, T.NumericType):
            dbl, pres = f"CAST({q(c)} AS DOUBLE)", f"({q(c)} IS NOT NULL)"
        else:
            dbl, pres = as_double_sql(q(c)), f"(NOT {is_null_token_sql(q(c))})"
        extra += [F.expr(dbl).alias(parsed[c]), F.expr(pres).alias(present[c])]
    if extra:
        df = df.select("*", *extra)

    def as_double(c: str) -> Column:
        return F.col(parsed[c])

    # The first reason that applies wins; the order puts structural problems first. A
    # condition that is null counts as false (CASE WHEN).
    lab_sql = q(d.label_column) if has_label else "CAST(NULL AS STRING)"
    checks: list[tuple[str, str]] = []
    if CORRUPT in df.columns:
        checks.append((f"{q(CORRUPT)} IS NOT NULL", "malformed_record"))
    if d.id_column:
        checks.append((is_blank_sql(q(d.id_column)), "null_id"))
    if fitted is None:
        checks.append((is_blank_sql(lab_sql), "null_label"))
    if cfg.is_regression:
        y_sql = q(parsed[d.label_column]) if has_label else "CAST(NULL AS DOUBLE)"
        checks.append((f"(NOT {is_blank_sql(lab_sql)}) AND {y_sql} IS NULL", "bad_label_type"))
        checks.append((non_finite_sql(y_sql), "bad_value:label"))
    else:
        checks.append((undecodable_sql(lab_sql), "bad_encoding:label"))
        if fitted is not None and has_label:
            checks.append((not_in_sql(lab_sql, list(fitted.labels)), "unseen_label"))
    if cfg.is_text:
        assert d.text_column
        checks.append((is_blank_sql(q(d.text_column)), "empty_text"))
        checks.append((undecodable_sql(q(d.text_column)), f"bad_encoding:{d.text_column}"))
    for c in numeric:
        v = q(parsed[c])
        checks.append((f"{q(present[c])} AND {v} IS NULL", f"bad_type:{c}"))
        checks.append((non_finite_sql(v), f"bad_value:{c}"))
        if fitted is not None and c in fitted.numeric_stats:
            mean, std = fitted.numeric_stats[c]
            checks.append((f"abs(({v} - {sql_double(mean)}) / {sql_double(std or 1.0)}) > "
                           f"{sql_double(MAX_ABS_Z)}", f"out_of_range:{c}"))
    for c in categorical:
        checks.append((undecodable_sql(q(c)), f"bad_encoding:{c}"))
    if fitted is not None and fitted.quarantine_unseen_categories:
        for c, cats in fitted.categories.items():
            checks.append((not_in_sql(q(c), list(cats)), f"unseen_category:{c}"))
    reason_sql = ("CASE " + " ".join(f"WHEN {cond} THEN {sql_str(why)}" for cond, why in checks)
                  + " END") if checks else "CAST(NULL AS STRING)"
    # The presence flags served only the checks: dropped before the repeats' shuffle and
    # the cache, which carry every column (8 bytes a flag in Spark's row format).
    df = df.withColumn(REASON, F.expr(reason_sql).cast("string")).drop(*present.values())

    # Content hash over the fields the model sees: the dedupe and split key, and the
    # derived id when the input has none. The label is left out so that the same row gets
    # the same id when a later, unlabeled table is scored. Text is keyed on its normalized
    # form, so near-copies (case, spacing, Unicode form) are one text.
    if cfg.is_text:
        assert d.text_column
        from sparkforge.tokenize import dedupe_key

        parts = [dedupe_key(F.col(d.text_column).cast("string"))]
    else:
        parts = [F.col(c).cast("string") for c in sorted(feats)]
    content = F.sha2(F.concat_ws("\u001f", *[F.coalesce(p, F.lit("\u2400")) for p in parts]),
                     256)
    df = df.withColumn("_content", content)
    same = Window.partitionBy("_content", REASON)
    # Rows of one partition share their content columns, so only the other columns (the
    # id, the label, columns the model does not see) can tell them apart: ordering by
    # those alone numbers repeats deterministically without sorting every row on all of
    # its columns.
    content_names = {d.text_column} if cfg.is_text else set(feats)
    order_names = [c for c in original if c not in content_names]
    if cfg.is_text:  # near-copies share the key but not the raw text
        order_names.append(str(d.text_column))
    order = [F.col(c) for c in order_names] or [F.col("_content")]  # features only
    occurrence = F.row_number().over(same.orderBy(
        *([F.col(d.id_column)] if d.id_column else []), *order))
    # Repeats are numbered for the ids of a table without an id column, and for dedupe.
    # Scoring a table with ids needs neither: no window for that.
    need_occ = (not d.id_column and number_repeats) or (_dedupe(cfg) and fitted is None)
    # The same features with different labels: no rule can say which is right, and
    # keeping one by sort order would be arbitrary; all of them are quarantined.
    need_conflict = fitted is None and not cfg.is_regression
    lab = F.trim(label.cast("string"))
    conflict = F.coalesce(F.min(lab).over(same) != F.max(lab).over(same), F.lit(False))
    # Preprocess of a table with ids also looks for rows that share an id (below): a
    # window that shuffles every row, ordered by all of them.
    by_id = bool(d.id_column) and fitted is None
    cached: list[DataFrame] = []
    if by_id:
        # That shuffle is paid anyway: these windows run on the whole rows too, and the
        # rows are cached once, after both (a narrow numbering would cache them twice).
        if need_occ:
            df = df.withColumn("_occ", occurrence)
        if need_conflict:
            df = df.withColumn("_conflict", conflict)
    elif need_occ or need_conflict:
        narrow = list(dict.fromkeys([*([d.id_column] if d.id_column else []), *order_names,
                                     *([d.label_column] if has_label else [])]))
        df, cached = _number_repeats(df, narrow, occurrence if need_occ else None,
                                     conflict if need_conflict else None)
    if need_conflict:
        df = df.withColumn(REASON, F.when(F.col(REASON).isNull() & F.col("_conflict"),
                                          F.lit("conflicting_label")).otherwise(F.col(REASON)))
    base = F.substring(F.col("_content"), 1, 20)
    if d.id_column:
        id_col = F.col(d.id_column).cast("string")
    elif not need_occ:
        id_col = base
    else:
        # Stable id from content; repeated identical rows get -2, -3, ... when not deduped.
        id_col = F.when(F.col("_occ") > 1, F.concat_ws("-", base, F.col("_occ").cast("string"))
                        ).otherwise(base)
    df = df.withColumn("id", id_col).withColumn("_split_key", base)
    if by_id:
        # An id names one record: a second row with the same id is a copy of it (same
        # content: a duplicate) or a clash (other content: duplicate_id, a defect).
        same_id = Window.partitionBy("id", REASON).orderBy(*[F.col(c) for c in original])
        first = F.first("_content").over(same_id)
        df = df.withColumn(REASON, F.when(
            F.col(REASON).isNull() & (F.row_number().over(same_id) > 1),
            F.when(first == F.col("_content"), F.lit("duplicate"))
            .otherwise(F.lit("duplicate_id"))).otherwise(F.col(REASON)))
    if _dedupe(cfg) and fitted is None:
        df = df.withColumn(REASON, F.when(F.col(REASON).isNull() & (F.col("_occ") > 1),
                                          F.lit("duplicate")).otherwise(F.col(REASON)))
    if not cached:  # no narrow numbering: the rows are cached as they are
        df = df.cache()
        cached.append(df)

    raw_struct = F.to_json(F.struct(*[F.col(c) for c in df.columns
                                      if c in original or c == CORRUPT]))
    quarantine = (df.filter(F.col(REASON).isNotNull())
                  .select(F.lit(stage).alias("stage"), F.col(REASON), F.col("id"),
                          raw_struct.alias("raw")))

    if cfg.is_text:
        assert d.text_column
        text = F.col(d.text_column)
        cols = [F.col("id"), label.cast("string").alias("label"), text.alias("text")]
    else:
        if cfg.is_regression:
            lab = as_double(d.label_column) if has_label else F.lit(None).cast("double")
        else:
            lab = F.trim(label.cast("string"))
        cols = [F.col("id"), lab.alias("label")]
        cols += [as_double(c).alias(c) for c in numeric]
        cols += [F.trim(F.col(c).cast("string")).alias(c) for c in categorical]
    for c in keep_columns or []:
        if c not in original:
            raise ConfigError(f"score.passthrough_columns: {c!r} is not a column of the input; "
                              f"its columns are {original}")
        if c not in {"id", "label", "text", "split", *numeric, *categorical}:
            cols.append(F.col(c))
    split = cfg.preprocess.split
    # Split on the content, not the id: every copy of a row (kept repeats, or the same
    # content under two ids) lands in one split, so no test row is a copy of a train row.
    key = F.col("_split_key")
    stratified = split.stratify and fitted is None and not cfg.is_regression
    projected = None
    if stratified:  # preprocess only (fitted is None)
        kept = (df.filter(F.col(REASON).isNull()).select(*cols, key)
                .withColumn("split", stratified_split_column(
                    key, F.col("label"), split.train, split.val, split.seed))
                .drop("_split_key")
                .withColumn(FOLD, fold_column(F.col("id"), split.seed)))
    else:
        # Each row's split depends on its own key alone: computed for every row, then
        # the kept ones are those without a reason.
        projected = df.select(
            *cols, split_column(key, split.train, split.val, split.seed).alias("split"),
            *([fold_column(F.col("id"), split.seed).alias(FOLD)] if fitted is None else []),
            F.col(REASON))
        kept = projected.filter(F.col(REASON).isNull()).drop(REASON)
    return Prepared(kept=kept, quarantine=quarantine, rows=df, numeric_columns=numeric,
                    categorical_columns=categorical, type_evidence=evidence,
                    projected=projected, cached=tuple(cached))


def _number_repeats(df: DataFrame, narrow: list[str], occurrence: Column | None,
                    conflict: Column | None) -> tuple[DataFrame, list[DataFrame]]:
    """Add ``_occ`` (the row's number among its repeats) and ``_conflict`` (its repeats
    disagree on the label) to ``df``, whose ``occurrence`` and ``conflict`` are windows
    over ``_content`` and the reason; returns the frame and the frames cached for it.

    The windows shuffle and sort every row of their partitions. Over the whole row that
    was the costliest step of preprocess on wide tables (175 MB of shuffle for a
    300k x 40 CSV, then the cache of every row after it). Here they run over a narrow
    projection: a row number, the content hash, the reason and the ``narrow`` columns
    (the id, the label, the columns outside the content). Only the rows whose values
    differ from a lone row's (a later repeat, a conflict) are kept and joined back by the
    row number, broadcast when they are few.
    """
    from pyspark.sql import functions as F

    # A row number of the cached rows. The cache (memory and disk) is read, not
    # recomputed, by every pass; a recomputed partition re-reads the same input split
    # and gets the same numbers.
    base = df.withColumn(ROW, F.monotonically_increasing_id()).cache()
    w = base.select(ROW, "_content", REASON, *narrow)
    flags, cols = [], [ROW]
    if occurrence is not None:
        w = w.withColumn("_occ", occurrence)
        flags.append(F.col("_occ") > 1)
        cols.append("_occ")
    if conflict is not None:
        w = w.withColumn("_conflict", conflict)
        flags.append(F.col("_conflict"))
        cols.append("_conflict")
    hit = flags[0] if len(flags) == 1 else flags[0] | flags[1]
    odd = w.filter(hit).select(*cols).cache()
    n_odd = odd.count()
    log.info("%d row(s) are later repeats or conflicting repeats", n_odd)
    # Many: a hash join on the row number, which shuffles the rows once (no sort of them).
    few = n_odd <= BROADCAST_REPEATS
    joined = base.join(F.broadcast(odd) if few else odd.hint("shuffle_hash"), ROW, "left")
    if occurrence is not None:
        joined = joined.withColumn("_occ", F.coalesce(F.col("_occ"), F.lit(1)))
    if conflict is not None:
        joined = joined.withColumn("_conflict", F.coalesce(F.col("_conflict"), F.lit(False)))
    return joined.drop(ROW), [base, odd]
