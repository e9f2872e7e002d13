"""Stage 4a: score a table with the selected model; scheduled, idempotent runs.

The table (``score.input``, default ``data.input``) is read raw and the saved
preprocessing is re-applied (``model/tokenizer.json`` or ``model/preprocessor.json``,
the training labels and categories). Every artifact is checked against the manifest's
sha256 before it is used (:func:`load_scoring_model`). Rows that cannot be scored are
quarantined with a reason; the rows read are counted as read, before any is kept or
quarantined, and ``rows_in == rows_scored + rows_quarantined (+ rows_skipped when
incremental)`` is checked before anything is published.

Each variant runs on ``score.backend`` (onnxruntime, or torch for the variants compress
saved a torch form of; the others stay on onnxruntime), chosen by
:func:`sparkforge.infer.runs.variant_model`; one log line and the run manifest's
``backends`` say which ran each variant and why.

Where a run is written (the pipeline's ``eval_scores/`` or a dated
``scores/run_date=YYYY-MM-DD/``), its lock, staging and publish: :mod:`sparkforge.infer.runs`.
Rerunning a date replaces that partition; a run that fails before the rename leaves the
published one untouched, and the next run removes what it left in ``_staging/``.
The rename is atomic on local, NFS and HDFS paths (not on object stores).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sparkforge.artifacts import (
    read_verified_json,
    read_verified_text,
    record_artifacts,
    scoring_config,
    update_manifest,
    verify_artifact,
    write_json_atomic,
)
from sparkforge.config import Config, ConfigError
from sparkforge.data.prepare import Fitted, prepare
from sparkforge.faults import fault_point
from sparkforge.infer.runs import (
    RUN_MANIFEST,
    STAGING,
    RunTarget,
    VariantModel,
    clean_leftovers,
    publish,
    published_dates,
    read_selection,
    run_lock,
    score_target,
    staging_dirs,
    variant_model,
    verified_variants,
)
from sparkforge.models import task_input_names
from sparkforge.rundir import RunDir

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

NEW_SPLIT = "new"
PUBLISH_FAULT = "score.before_publish"
# Up to this many rows kept by preprocess, their (id, split) pairs (about 60 bytes a row)
# are broadcast to the rows being scored, which then are not shuffled for the join; more
# are joined by a shuffle. (On a 300k x 40 table the shuffle of the encoded rows to join
# them was 50 MB and two stages.)
BROADCAST_SEEN = 1_000_000
__all__ = ["RUN_MANIFEST", "STAGING", "RowCountError", "ScoringModel", "load_scoring_model",
           "published_dates", "run_score"]


class RowCountError(RuntimeError):
    """The rows read do not add up to the rows scored, quarantined and skipped."""


@dataclass(frozen=True)
class ScoringModel:
    """Everything scoring loads from the run directory, each file checked against the
    manifest's sha256 when this is built."""

    labels: list[str]
    fitted: Fitted
    encoding: Any                  # the tokenizer's JSON text, or the feature statistics
    selection: dict[str, Any]
    sha256: dict[str, str]         # variant -> sha256 of its (verified) ONNX file
    reference: dict[str, Any] | None  # drift reference (model/reference.json)
    # variant -> the (verified) file and backend score.backend scores it with
    models: dict[str, VariantModel] = field(default_factory=dict)

    @property
    def selected(self) -> str:
        return str(self.selection["selected"])


def load_scoring_model(cfg: Config) -> ScoringModel:
    """Read and verify every artifact scoring needs, before any Spark work; raises
    :class:`~sparkforge.artifacts.ArtifactError` (exit code 2) naming a changed file."""
    out, run = cfg.out, RunDir(cfg.out)
    selection = read_selection(out)
    labels = read_verified_json(out, run.labels)
    if cfg.is_text:
        encoding: Any = read_verified_text(out, run.tokenizer)
        fitted = Fitted(labels=labels, numeric=[], categories={})
    else:
        encoding = read_verified_json(out, run.preprocessor)
        fitted = Fitted(labels=labels, numeric=list(encoding["numeric"]),
                        categories=dict(encoding["categorical"]),
                        quarantine_unseen_categories=cfg.score.quarantine_unseen_categories,
                        numeric_stats={c: (float(v["mean"]), float(v["std"]))
                                       for c, v in encoding["numeric"].items()})
    ref = run.reference
    reference = read_verified_json(out, ref) if ref.exists() else None
    sha256 = verified_variants(out, selection)
    models = {v: variant_model(out, selection, v, sha, cfg.score.backend)
              for v, sha in sha256.items()}
    return ScoringModel(labels=labels, fitted=fitted, encoding=encoding, selection=selection,
                        sha256=sha256, reference=reference, models=models)


def encode(cfg: Config, df: DataFrame, model: ScoringModel,
           keep: list[str] | None = None) -> DataFrame:
    """Re-apply the saved tokenizer or feature encoding to prepared rows (tabular
    features in compact form, expanded where the model runs)."""
    from sparkforge import features, tokenize

    if cfg.is_text:
        return tokenize.tokenize_df(df, model.encoding,
                                    normalize=cfg.preprocess.normalize_unicode)
    # Compact, in the JVM: a narrow row crosses into the scoring worker, which expands
    # it; the dense vector through an Arrow UDF and back cost most of a tabular score run.
    return features.compact(df, model.encoding, keep)


def input_fingerprint(pattern: str) -> str:
    """sha256 over (path, size, mtime) of the input files: a cheap 'same input?' check."""
    from sparkforge.data.preflight import input_files

    h = hashlib.sha256()
    for f in input_files(pattern):
        st = f.stat()
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def config_hash(cfg: Config) -> str:
    d = cfg.to_dict()
    d.pop("run", None)  # the date is the run's key, not part of what it computes
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def _with_seen_split(spark: SparkSession, cfg: Config, rows: DataFrame) -> DataFrame:
    """``rows`` (with an ``id``) with the split the pipeline gave each: rows it saw keep
    their train/val/test split (stratified splits cannot be recomputed row by row), rows it
    never saw are "new". Joined once encoded: the narrow rows are what a shuffle join
    moves, not the raw columns; when preprocess kept at most ``BROADCAST_SEEN`` rows, their
    splits are broadcast instead and the rows are not shuffled."""
    from pyspark.sql import functions as F

    if not RunDir(cfg.out).preprocessed.exists():
        return rows
    return (rows.join(_seen_splits(spark, cfg), "id", "left")
            .withColumn("split", F.coalesce(F.col("_seen"), F.lit(NEW_SPLIT)))
            .drop("_seen"))


def _seen_splits(spark: SparkSession, cfg: Config) -> DataFrame:
    """id -> the split the pipeline put it in, one row per id (an id in several splits
    counts as the earliest of train, val, test: never evaluated on rows it trained on)."""
    from pyspark.sql import functions as F

    rank = (F.when(F.col("split") == "train", 0).when(F.col("split") == "val", 1)
            .otherwise(2))
    seen = (spark.read.parquet(str(RunDir(cfg.out).preprocessed)).select("id", "split")
            .groupBy("id").agg(F.min(F.struct(rank.alias("r"), F.col("split"))).alias("m"))
            .select("id", F.col("m.split").alias("_seen")))
    return F.broadcast(seen) if 0 <= _rows_kept(cfg) <= BROADCAST_SEEN else seen


def _rows_kept(cfg: Config) -> int:
    """The rows preprocess kept, from the manifest (-1 when it does not say): a size for
    choosing the join, not a figure anything is checked against."""
    from sparkforge.artifacts import read_json

    path = RunDir(cfg.out).manifest
    n = read_json(path).get("preprocess", {}).get("rows_kept") if path.exists() else None
    return int(n) if isinstance(n, int) else -1


def check_row_counts(n_in: int, n_scored: int, n_quarantined: int, n_skipped: int,
                     source: str) -> None:
    """Rows read (counted from the input) must equal rows scored + quarantined + skipped."""
    if n_in != n_scored + n_quarantined + n_skipped:
        raise RowCountError(
            f"score: {n_in} rows read from {source} but {n_scored} scored + {n_quarantined} "
            f"quarantined + {n_skipped} skipped = {n_scored + n_quarantined + n_skipped}; a "
            "row was lost or duplicated between reading and writing, so nothing was published")


def run_score(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    cfg = scoring_config(cfg)
    if cfg.score.mode == "embed":
        return run_embed(spark, cfg)
    model = load_scoring_model(cfg)
    target = score_target(cfg)
    out = cfg.out
    with run_lock(target):  # held until the run is recorded: one run per target at a time
        clean_leftovers(target)
        manifest = _score(spark, cfg, model, target)
        update_manifest(out, target.manifest_section,
                        {**manifest, "published": str(target.final.relative_to(out)),
                         "run_dates": RunDir(out).published_dates()},
                        [target.final / RUN_MANIFEST])
        if target.dated and cfg.score.output_table:
            write_output_table(spark, cfg.score.output_table, target)
    return manifest


def _score(spark: SparkSession, cfg: Config, model: ScoringModel,
           target: RunTarget) -> dict[str, Any]:
    from pyspark.sql import functions as F

    out = cfg.out
    started = dt.datetime.now(dt.UTC).isoformat()
    selection, selected = model.selection, model.selected
    source = cfg.score.input or cfg.data.input
    keep = list(cfg.score.passthrough_columns)
    prep = prepare(spark, cfg, stage="score", fitted=model.fitted, input_path=source,
                   keep_columns=keep)
    kept = prep.kept
    scores_dir = RunDir(out).scores
    skipped = 0
    if cfg.run.incremental:
        earlier = [d for d in published_dates(scores_dir) if d != target.run_date]
        if earlier:
            done = (spark.read.parquet(*[str(scores_dir / f"run_date={d}") for d in earlier])
                    .select("id").distinct())
            before = kept.count()
            kept = kept.join(done, "id", "left_anti")
            skipped = before - kept.count()
    encoded = _with_seen_split(spark, cfg, encode(cfg, kept, model, keep)).cache()

    inputs = task_input_names(text=cfg.is_text)
    threads = int(spark.conf.get("spark.task.cpus", "1") or "1")
    log.info("score %s: score.backend=%s; %s", target.name, cfg.score.backend,
             ", ".join(f"{v} on {m.backend} ({m.why})" for v, m in model.models.items()))
    parts = []
    for variant in selection["paths"]:
        # The selected variant scores every row; the others only the test split, so that
        # evaluation compares all variants on the same rows.
        rows = (encoded if variant == selected
                else encoded.filter(F.col("split") == "test"))
        parts.append(_score_variant(rows, model.models[variant], inputs=inputs,
                                    labels=model.labels, variant=variant,
                                    batch_size=cfg.score.batch_size, threads=threads,
                                    passthrough=keep,
                                    threshold=_threshold(selection, variant)))
    scored = parts[0]
    for p in parts[1:]:
        scored = scored.unionByName(p)

    staging, q_staging = staging_dirs(target)
    try:
        scored.write.mode("overwrite").parquet(str(staging))
        prep.quarantine.write.mode("overwrite").parquet(str(q_staging))
        written = spark.read.parquet(str(staging))
        counts = {r["model_variant"]: r["count"]
                  for r in written.groupBy("model_variant").count().collect()}
        reasons = {r["reason"]: r["count"] for r in
                   spark.read.parquet(str(q_staging)).groupBy("reason").count().collect()}
        n_scored = counts.get(selected, 0)
        n_quarantined = sum(reasons.values())
        # Every row the read gave prepare(), counted before any was kept or quarantined
        # (from its cache, which scoring filled: no second parse of the input).
        n_in = prep.rows.count()
        check_row_counts(n_in, n_scored, n_quarantined, skipped, source)
        drift = _drift(spark, cfg, model, encoded if cfg.is_text else kept,
                       written.filter(F.col("model_variant") == selected), n_scored)
        manifest = {
            "run_date": target.run_date, "target": target.name, "input": source,
            "input_fingerprint": input_fingerprint(source),
            "config_sha256": config_hash(cfg), "model_variant": selected,
            "model_sha256": model.sha256[selected], "rows_in": n_in,
            "rows_scored": n_scored, "rows_quarantined": n_quarantined,
            "rows_skipped_already_scored": skipped, "quarantine_reasons": reasons,
            "rows_scored_per_variant": counts, "incremental": cfg.run.incremental,
            "backends": {v: {"backend": m.backend, "path": str(m.path.relative_to(out)),
                             "sha256": m.sha256, "why": m.why}
                         for v, m in model.models.items()},
            "drift": drift, "started_at": started,
            "finished_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        write_json_atomic(staging / RUN_MANIFEST, manifest)
        fault_point(PUBLISH_FAULT)
        publish(staging, target.final)
        publish(q_staging, target.quarantine)
    finally:
        for frame in (encoded, *prep.cached):
            frame.unpersist()
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(q_staging, ignore_errors=True)
    if drift["drifted"]:
        log.warning("drift above PSI %.2f in %s (PSI %s)", cfg.score.drift_threshold,
                    drift["drifted"], {c: round(drift["psi"][c], 3) for c in drift["drifted"]})
    log.info("score %s: %d in, %d scored, %d quarantined %s, %d skipped", target.name, n_in,
             n_scored, n_quarantined, reasons, skipped)
    return manifest


def _score_variant(rows: DataFrame, vm: VariantModel, **kw: Any) -> DataFrame:
    """``score_df`` of ``rows`` with the file and backend chosen for the variant."""
    from sparkforge.infer import score_df

    return score_df(rows, model_path=str(vm.path.resolve()), sha256=vm.sha256,
                    model_format=vm.format, model_spec=vm.spec, **kw)


def _threshold(selection: dict[str, Any], variant: str) -> float | None:
    """The decision threshold compress recorded for ``variant`` (the selected one), if any."""
    rec = selection.get("threshold") or {}
    return float(rec["value"]) if rec.get("variant") == variant else None


def write_output_table(spark: SparkSession, table: str, target: RunTarget) -> None:
    """Write the published partition to the catalog table ``table`` (partitioned by
    ``run_date``), replacing that date's partition only: rerunning a date never
    duplicates its rows."""
    from pyspark.sql import functions as F

    df = (spark.read.parquet(str(target.final))
          .withColumn("run_date", F.lit(target.run_date)))
    if spark.catalog.tableExists(table):
        cols = spark.table(table).columns
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ConfigError(f"score.output_table={table!r} has columns {missing} that this "
                              "run does not write (score.passthrough_columns changed?); "
                              "use a new table or drop that one")
        (df.select(*cols).write.mode("overwrite").option("partitionOverwriteMode", "dynamic")
         .insertInto(table))
    else:
        df.write.partitionBy("run_date").format("parquet").saveAsTable(table)
    log.info("score %s: written to table %s", target.name, table)


def _drift(spark: SparkSession, cfg: Config, model: ScoringModel, rows: DataFrame,
           scored: DataFrame, n_rows: int) -> dict[str, Any]:
    """PSI of the features (raw columns, or token counts for text) and of the selected
    model's scores against training, on a bounded sample of the ``n_rows`` scored rows."""
    from pyspark.sql import functions as F

    from sparkforge.metrics.drift import (
        bounded_sample,
        drift_report,
        numeric_edges,
        table_profile,
    )
    from sparkforge.tokenize import with_token_count

    if model.reference is None:
        return {"psi": {}, "threshold": cfg.score.drift_threshold, "drifted": []}
    feats = with_token_count(rows) if cfg.is_text else rows
    report = drift_report(model.reference, feats, cfg.score.drift_threshold, n_rows)

    # Score reference: the selected model on the validation split, computed once and
    # recorded in the manifest like every artifact.
    score_col = (F.col("prediction") if cfg.is_regression
                 else F.array_max(F.col("probability"))).alias("score")
    selected = model.selected
    sref_path = RunDir(cfg.out).score_reference(selected)
    if sref_path.exists():
        sref = read_verified_json(cfg.out, sref_path)
    else:
        pre = (spark.read.parquet(str(RunDir(cfg.out).preprocessed))
               .filter(F.col("split") == "val"))
        n_val = pre.count()  # from the files' metadata: nothing is scored for it
        val = bounded_sample(pre, n_val)
        val_scores = _score_variant(val, model.models[selected],
                                    inputs=task_input_names(text=cfg.is_text),
                                    labels=model.labels, variant=selected).select(score_col)
        sample = val_scores.toArrow()  # the bounded sample's scores
        sref = table_profile(sample, numeric_edges(sample, ["score"]), [])
        write_json_atomic(sref_path, sref)
        record_artifacts(cfg.out, [sref_path])
    sreport = drift_report(sref, scored.select("id", score_col), cfg.score.drift_threshold,
                           n_rows)
    report["psi"].update(sreport["psi"])
    report["drifted"] = sorted(report["drifted"] + sreport["drifted"])
    return report


def run_embed(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    """Sentence embeddings of a whole text table -> embeddings/run_date=YYYY-MM-DD/."""
    import uuid

    from sparkforge.compress.onnx_export import export_onnx
    from sparkforge.infer import embed_df
    from sparkforge.models.trained import load_trained

    if cfg.model_name != "minilm":
        raise ConfigError(f"score.mode=embed needs train.model=minilm (got {cfg.model_name!r})")
    out, run = cfg.out, RunDir(cfg.out)
    labels = read_verified_json(out, run.labels)
    model = ScoringModel(labels=labels, fitted=Fitted(labels=labels, numeric=[], categories={}),
                         encoding=read_verified_text(out, run.tokenizer),
                         selection={}, sha256={}, reference=None)
    enc_path = run.variant("encoder")
    if enc_path.exists():
        enc_sha = verify_artifact(out, enc_path)
    else:
        import numpy as np

        for path in (run.model_spec, run.weights):  # what load_trained reads
            verify_artifact(out, path)
        trained, spec = load_trained(cfg)
        export_onnx(_Encoder(trained), spec, enc_path,
                    {"input_ids": np.ones((2, 8), dtype=np.int64),
                     "attention_mask": np.ones((2, 8), dtype=np.int64)})
        update_manifest(out, "embed_model", {"path": str(enc_path.relative_to(out))},
                        [enc_path])
        enc_sha = verify_artifact(out, enc_path)
    keep = list(cfg.score.passthrough_columns)
    source = cfg.score.input or cfg.data.input
    prep = prepare(spark, cfg, stage="score", fitted=model.fitted, input_path=source,
                   keep_columns=keep)
    encoded = encode(cfg, prep.kept, model, keep)
    emb = embed_df(encoded, model_path=str(enc_path.resolve()), sha256=enc_sha,
                   batch_size=cfg.score.batch_size, passthrough=keep)
    final = run.dated(run.embeddings, cfg.run.run_date)
    staging = run.embeddings / STAGING / f"{final.name}.{uuid.uuid4().hex[:8]}"
    try:
        emb.write.mode("overwrite").parquet(str(staging))
        n = spark.read.parquet(str(staging)).count()
        n_q = prep.quarantine.count()
        n_in = prep.rows.count()  # every row read, as in _score
        check_row_counts(n_in, n, n_q, 0, source)
        publish(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary = {"run_date": cfg.run.run_date, "rows_embedded": n, "rows_quarantined": n_q,
               "rows_in": n_in, "path": str(final.relative_to(out))}
    update_manifest(out, "embed", summary)
    return summary


def _Encoder(clf: Any) -> Any:
    """Wrap a MiniLM classifier so that ``forward`` returns its sentence embedding."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clf = clf

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
            return self.clf.encode(input_ids, attention_mask)

    return Encoder()
