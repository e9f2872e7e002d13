"""Stage 1: raw input -> quarantine/ + preprocessed/ (Parquet, partitioned by split)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sparkforge import features, tokenize
from sparkforge.artifacts import save_training_config, update_manifest, write_json_atomic
from sparkforge.config import Config
from sparkforge.data.prepare import (
    POLICY_REASONS,
    REASON,
    SPLITS,
    DataQualityError,
    prepare,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


# Train rows whose token lengths choose tokenizer.max_length when it is 0 (auto).
LENGTH_SAMPLE_ROWS = 2000
# Most rows in a Parquet row group of preprocessed/ (see the write below).
ROW_GROUP_ROWS = 32_768


def _fit_tokenizer(cfg: Config, kept: DataFrame) -> tuple[str, int, str]:
    """(tokenizer JSON, max_length, how max_length was chosen)."""
    from pyspark.sql import functions as F

    t = cfg.tokenizer
    train = kept.filter(F.col("split") == "train").select("text")
    cap = t.max_length or t.max_length_cap
    if t.kind == "pretrained":
        tok = tokenize.load_pretrained(cap)
    else:
        # A bounded sample of the train split streamed to the driver, never the corpus.
        sample = train.limit(t.train_sample_rows)
        stream = (tokenize.normalize_text(r.text) for r in sample.toLocalIterator())
        tok = tokenize.train_wordpiece(stream, t.vocab_size, cap, t.lowercase)
    if t.max_length:
        return str(tok.to_str()), t.max_length, "tokenizer.max_length"
    # A seeded, bounded sample (top-k by a hash of the id: no full sort, no collect).
    rows = (kept.filter(F.col("split") == "train")
            .orderBy(F.xxhash64(F.lit(7), F.col("id"))).select("text")
            .limit(LENGTH_SAMPLE_ROWS).collect())
    texts = [tokenize.normalize_text(r.text) for r in rows]
    length = tokenize.choose_max_length(tok, texts, t.max_length_cap)
    how = (f"95th percentile of the token lengths of {len(texts)} train rows, rounded up to "
           f"a multiple of 8, within [16, tokenizer.max_length_cap={t.max_length_cap}]")
    log.info("tokenizer.max_length=0: using %d (%s)", length, how)
    return str(tok.to_str()), length, how


def _text_stats(df: DataFrame, max_length: int, unk_id: int | None) -> dict[str, Any]:
    from pyspark.sql import functions as F

    n_tok = F.aggregate("attention_mask", F.lit(0), lambda acc, x: acc + x)
    unk = (F.size(F.filter("input_ids", lambda x: x == F.lit(unk_id))) if unk_id is not None
           else F.lit(0))
    row = (df.select(n_tok.alias("n"), unk.alias("unk"))
           .agg(F.percentile_approx("n", [0.5, 0.9, 0.99]).alias("p"),
                F.avg((F.col("n") >= max_length).cast("double")).alias("trunc"),
                (F.sum("unk") / F.sum("n")).alias("unk_rate"))
           .first())
    assert row is not None
    p = row["p"] or [0, 0, 0]
    return {"token_length_p50": p[0], "token_length_p90": p[1], "token_length_p99": p[2],
            "truncation_rate": row["trunc"], "unknown_token_rate": row["unk_rate"]}


from sparkforge.tokenize import N_TOKENS, with_token_count  # noqa: E402


def drift_reference(df: DataFrame, numeric: list[str], categorical: dict[str, dict[str, Any]],
                    raw_train: DataFrame, n_train: int) -> dict[str, Any]:
    """Training distributions that scoring runs are compared with (PSI); ``categorical``:
    the train value counts of the categorical columns, from fitting the encoder. The
    numeric bins come from a bounded sample of the ``n_train`` train rows."""
    from sparkforge.metrics.drift import (
        categorical_fractions,
        numeric_edges,
        sample_table,
        table_profile,
    )

    ref: dict[str, Any] = {}
    if numeric:
        numeric_src = df if N_TOKENS in numeric else raw_train
        sample = sample_table(numeric_src, numeric, n_train)
        ref = table_profile(sample, numeric_edges(sample, numeric), [])
    ref.update({c: categorical_fractions(vc) for c, vc in categorical.items()})
    return ref


def run_preprocess(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    from pyspark.sql import functions as F

    out = cfg.out
    model_dir = out / "model"
    prep = prepare(spark, cfg)

    # The kept rows are a filter and projection of the cached rows: caching them again
    # cost more than the projection saves in the passes below (3-4 s of 70 on the
    # 300k x 40 benchmark table). A stratified split is a shuffle: that one is cached.
    kept = prep.kept.cache() if prep.projected is None else prep.kept
    # One pass for the kept rows' count, the labels, the null rates of the features and
    # the target's train statistics (each was a job of its own)...
    feats = [] if cfg.is_text else prep.numeric_columns + prep.categorical_columns
    aggs = [F.count(F.lit(1)).alias("_n")]
    aggs += [F.count_if(F.col(c).isNull()).alias(f"_null{i}") for i, c in enumerate(feats)]
    # ...and the encoder's numeric statistics over the train split (a job of their own was
    # 5 s of a 300k x 40 table's preprocess).
    aggs += features.moment_aggs(prep.numeric_columns, F.col("split") == "train")
    if cfg.is_regression:
        y_train = F.when(F.col("split") == "train", F.col("label"))
        aggs += [F.mean(y_train).alias("_mean"), F.stddev_pop(y_train).alias("_std")]
    else:
        aggs.append(F.collect_set("label").alias("_labels"))
    # ...and, unless the split is stratified, for the quarantine's reasons too: grouped by
    # reason, the pass that fills the cache (the kept rows' own pass was 5-7 s of 70 on
    # the 300k x 40 table). Counts come from the one cached frame, so in == kept +
    # quarantined by construction; the check below guards against a change breaking that.
    if prep.projected is not None:
        groups = prep.projected.groupBy(REASON).agg(*aggs).collect()
        reasons = {r[REASON]: int(r["_n"]) for r in groups if r[REASON] is not None}
        kept_row = next((r for r in groups if r[REASON] is None), None)
    else:
        reasons = {r[REASON]: r["count"]
                   for r in prep.quarantine.groupBy(REASON).count().collect()}
        kept_row = kept.agg(*aggs).first()
    n_quarantined = sum(reasons.values())
    n_kept = int(kept_row["_n"]) if kept_row is not None else 0
    n_in = n_kept + n_quarantined
    q_path = out / "quarantine" / "preprocess"
    prep.quarantine.write.mode("overwrite").parquet(str(q_path))
    counts = {"rows_in": n_in, "rows_kept": n_kept, "rows_quarantined": n_quarantined,
              "quarantine_reasons": reasons}
    if n_kept == 0:
        from sparkforge.jobs import quality_stop

        raise quality_stop(spark, cfg, prep.quarantine, counts, "preprocess kept no row")
    assert kept_row is not None

    labels: list[str] = []
    if not cfg.is_regression:
        labels = sorted(kept_row["_labels"])
        if len(labels) < 2:
            from sparkforge.jobs import quality_stop

            raise quality_stop(spark, cfg, prep.quarantine, counts,
                               f"data.label_column={cfg.data.label_column!r} has "
                               f"{len(labels)} distinct value(s) among kept rows; a "
                               "classifier needs at least 2")
    write_json_atomic(model_dir / "labels.json", labels)

    stats: dict[str, Any] = {}
    if cfg.is_text:
        doc, max_length, max_length_how = _fit_tokenizer(cfg, kept)
        stats.update(max_length=max_length, max_length_chosen_by=max_length_how)
        (model_dir / "tokenizer.json").write_text(doc)
        encoded = tokenize.tokenize_df(kept, doc, normalize=cfg.preprocess.normalize_unicode)
        from tokenizers import Tokenizer

        unk = Tokenizer.from_str(doc).token_to_id("[UNK]")
        artifacts = [model_dir / "tokenizer.json", model_dir / "labels.json"]
    else:
        fitted, cat_counts = features.fit_with_counts(
            kept.filter(F.col("split") == "train"), prep.numeric_columns,
            prep.categorical_columns,
            numeric_moments=features.moments(kept_row, prep.numeric_columns))
        write_json_atomic(model_dir / "preprocessor.json", fitted)
        # Compact (standardized numerics, one slot number per categorical column), in
        # the JVM: the dense one-hot row through an Arrow UDF was most of this stage's
        # time on wide tables; readers expand it per batch (features.densify).
        encoded = features.compact(kept, fitted)
        artifacts = [model_dir / "preprocessor.json", model_dir / "labels.json"]
        stats["feature_dim"] = fitted["dim"]
        # How categorical values were encoded: the vocabulary kept per column, and the
        # values (and train rows) that went to hashed buckets instead.
        stats["categorical_encoding"] = {**fitted["encoding"],
                                         "columns": fitted["categorical_counts"]}
        if cfg.is_regression:
            # Train-split mean and spread of the target: the model learns it standardised.
            stats["target"] = {"mean": float(kept_row["_mean"] or 0.0),
                               "std": float(kept_row["_std"]) if kept_row["_std"] else 1.0}
        stats["null_rates"] = {c: int(kept_row[f"_null{i}"]) / n_kept
                               for i, c in enumerate(feats)}

    if labels:
        index = F.create_map(*[x for i, lab in enumerate(labels) for x in (F.lit(lab), F.lit(i))])
        encoded = encoded.withColumn("label_index", index[F.col("label")].cast("int"))
    else:
        encoded = encoded.withColumn("label_index", F.lit(-1))
    pre_path = out / "preprocessed"
    # Row groups of at most ROW_GROUP_ROWS rows. Parquet's own limit is 128 MB compressed,
    # and encoded rows compress well: a file's rows were one row group, whose column
    # chunks a training rank decodes to read any of its rows, so rank memory grew with the
    # rows per file (bench_scale: 2.4 GiB at 1M rows, 4.0 at 5M).
    (encoded.write.mode("overwrite").option("parquet.block.row.count.limit",
                                            str(ROW_GROUP_ROWS))
     .partitionBy("split").parquet(str(pre_path)))

    written = spark.read.parquet(str(pre_path))
    # One small job for both tallies (split x label), not one per tally.
    tally = written.groupBy("split", *(["label"] if labels else [])).count().collect()
    per_split: dict[str, int] = {}
    label_dist: dict[str, int] = {}
    for r in tally:
        per_split[r["split"]] = per_split.get(r["split"], 0) + r["count"]
        if labels:
            label_dist[r["label"]] = label_dist.get(r["label"], 0) + r["count"]
    if cfg.is_text:
        stats.update(_text_stats(written.filter(F.col("split") == "train"),
                                 stats["max_length"], unk))
    train_rows = written.filter(F.col("split") == "train")
    reference = drift_reference(train_rows if not cfg.is_text else with_token_count(train_rows),
                                [N_TOKENS] if cfg.is_text else prep.numeric_columns,
                                {} if cfg.is_text else cat_counts,
                                kept.filter(F.col("split") == "train"),
                                per_split.get("train", 0))
    write_json_atomic(model_dir / "reference.json", reference)
    artifacts.append(model_dir / "reference.json")
    artifacts.append(save_training_config(cfg))  # score re-applies its data settings
    for frame in ([kept] if prep.projected is None else []) + list(prep.cached):
        frame.unpersist()

    summary = {
        "rows_in": n_in, "rows_kept": n_kept, "rows_quarantined": n_quarantined,
        "quarantine_reasons": reasons, "rows_per_split": {s: per_split.get(s, 0) for s in SPLITS},
        "labels": labels, "label_distribution": label_dist,
        "numeric_columns": prep.numeric_columns, "column_types": prep.type_evidence,
        "categorical_columns": prep.categorical_columns, **stats,
    }
    if sum(per_split.values()) != n_kept:
        raise RuntimeError(f"wrote {sum(per_split.values())} preprocessed rows but kept {n_kept}")
    update_manifest(out, "preprocess", summary, artifacts)
    log.info("preprocess: %d rows in, %d kept, %d quarantined %s; splits %s",
             n_in, n_kept, n_quarantined, reasons, summary["rows_per_split"])
    # Policy quarantines (duplicates, conflicting labels) are reported, not gated: they
    # are not defects of the input.
    n_defects = sum(n for r, n in reasons.items() if r not in POLICY_REASONS)
    frac = n_defects / n_in if n_in else 1.0
    if frac > cfg.preprocess.max_quarantine_fraction:
        raise DataQualityError(
            f"{n_defects} of {n_in} rows ({frac:.1%}) were quarantined as defects, above "
            f"preprocess.max_quarantine_fraction={cfg.preprocess.max_quarantine_fraction}; "
            f"reasons {reasons}. Inspect {q_path} or raise the threshold")
    return summary

