"""Stage 4a: score a table with the selected ONNX model; scheduled, idempotent runs.

The table (``score.input``, default ``data.input``) is read raw and the saved
preprocessing is re-applied (``model/tokenizer.json`` or ``model/preprocessor.json``,
the training labels and categories). Rows that cannot be scored are quarantined with
a reason, so ``rows_in == rows_scored + rows_quarantined (+ rows_skipped when
incremental)``.

Each run writes ``scores/run_date=YYYY-MM-DD/``: the output is staged under
``scores/_staging/`` and published with a directory rename, together with its
``_SUCCESS`` marker and ``_run_manifest.json``. Rerunning a date replaces that
partition; a run that fails before the rename leaves the published one untouched.
The rename is atomic on local, NFS and HDFS paths (not on object stores).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkforge.artifacts import (
    read_json,
    sha256_file,
    update_manifest,
    verify_artifact,
    write_json_atomic,
)
from sparkforge.config import Config, ConfigError
from sparkforge.data.prepare import Fitted, prepare
from sparkforge.faults import fault_point

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

RUN_MANIFEST = "_run_manifest.json"
NEW_SPLIT = "new"
STAGING = "_staging"


def fitted_from_model(cfg: Config) -> Fitted:
    model_dir = cfg.out / "model"
    labels = read_json(model_dir / "labels.json")
    if cfg.is_text:
        return Fitted(labels=labels, numeric=[], categories={})
    stats = read_json(model_dir / "preprocessor.json")
    return Fitted(labels=labels, numeric=list(stats["numeric"]),
                  categories=dict(stats["categorical"]),
                  quarantine_unseen_categories=cfg.score.quarantine_unseen_categories)


def encode(cfg: Config, df: DataFrame, keep: list[str] | None = None) -> DataFrame:
    """Re-apply the saved tokenizer or feature encoding to prepared rows."""
    from sparkforge import features, tokenize

    model_dir = cfg.out / "model"
    verify_artifact(cfg.out, model_dir / ("tokenizer.json" if cfg.is_text
                                          else "preprocessor.json"))
    if cfg.is_text:
        doc = (model_dir / "tokenizer.json").read_text()
        return tokenize.tokenize_df(df, doc, normalize=cfg.preprocess.normalize_unicode)
    return features.transform(df, read_json(model_dir / "preprocessor.json"), keep)


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


def published_dates(scores: Path) -> list[str]:
    return sorted(p.name.split("=", 1)[1] for p in scores.glob("run_date=*")
                  if (p / "_SUCCESS").exists())


def _publish(staging: Path, final: Path) -> None:
    """Swap ``staging`` in as ``final``: the old partition is moved aside first and only
    deleted once the new one is in place."""
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        final.rename(old)
    try:
        staging.rename(final)
    except BaseException:
        if old.exists() and not final.exists():
            old.rename(final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _selection(cfg: Config) -> dict[str, Any]:
    path = cfg.out / "compressed" / "selection.json"
    if not path.exists():
        raise ConfigError(f"output.dir={str(cfg.out)!r}: no compressed/selection.json; run "
                          "`sparkforge compress` with this config first")
    selection: dict[str, Any] = read_json(path)
    return selection


def run_score(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from sparkforge.infer import score_df

    if cfg.score.mode == "embed":
        return run_embed(spark, cfg)
    out = cfg.out
    run_date = cfg.run.run_date
    started = dt.datetime.now(dt.UTC).isoformat()
    selection = _selection(cfg)
    fitted = fitted_from_model(cfg)
    source = cfg.score.input or cfg.data.input
    keep = list(cfg.score.passthrough_columns)
    prep = prepare(spark, cfg, stage="score", fitted=fitted, input_path=source,
                   keep_columns=keep)
    reasons = {r["reason"]: r["count"] for r in prep.quarantine.groupBy("reason").count().collect()}
    kept = prep.kept
    pre_dir = out / "preprocessed"
    if pre_dir.exists():
        # Rows the pipeline saw keep their train/val/test split (stratified splits cannot
        # be recomputed row by row); rows it never saw are "new".
        seen = spark.read.parquet(str(pre_dir)).select("id", F.col("split").alias("_seen"))
        kept = (kept.join(seen, "id", "left")
                .withColumn("split", F.coalesce(F.col("_seen"), F.lit(NEW_SPLIT)))
                .drop("_seen"))
    scores_dir = out / "scores"
    skipped = 0
    if cfg.run.incremental:
        earlier = [d for d in published_dates(scores_dir) if d != run_date]
        if earlier:
            done = (spark.read.parquet(*[str(scores_dir / f"run_date={d}") for d in earlier])
                    .select("id").distinct())
            before = kept.count()
            kept = kept.join(done, "id", "left_anti")
            skipped = before - kept.count()
    encoded = encode(cfg, kept, keep).cache()

    inputs = ["input_ids", "attention_mask"] if cfg.is_text else ["features"]
    threads = int(spark.conf.get("spark.task.cpus", "1") or "1")
    parts = []
    sha = {}
    for variant, rel in selection["paths"].items():
        sha[variant] = verify_artifact(out, out / rel)
        # The selected variant scores every row; the others only the test split, so that
        # evaluation compares all variants on the same rows.
        rows = (encoded if variant == selection["selected"]
                else encoded.filter(F.col("split") == "test"))
        parts.append(score_df(rows, model_path=str((out / rel).resolve()), sha256=sha[variant],
                              inputs=inputs, labels=fitted.labels, variant=variant,
                              batch_size=cfg.score.batch_size, threads=threads,
                              passthrough=keep))
    scored = parts[0]
    for p in parts[1:]:
        scored = scored.unionByName(p)

    staging_root = scores_dir / STAGING
    staging = staging_root / f"run_date={run_date}.{uuid.uuid4().hex[:8]}"
    final = scores_dir / f"run_date={run_date}"
    q_final = out / "quarantine" / "score" / f"run_date={run_date}"
    q_staging = staging_root / f"quarantine-{staging.name}"
    try:
        scored.write.mode("overwrite").parquet(str(staging))
        prep.quarantine.write.mode("overwrite").parquet(str(q_staging))
        written = spark.read.parquet(str(staging))
        counts = {r["model_variant"]: r["count"]
                  for r in written.groupBy("model_variant").count().collect()}
        n_scored = counts.get(selection["selected"], 0)
        n_quarantined = sum(reasons.values())
        n_in = n_scored + n_quarantined + skipped
        drift = _drift(spark, cfg, encoded if cfg.is_text else kept, written.filter(
            F.col("model_variant") == selection["selected"]), selection)
        manifest = {
            "run_date": run_date, "input": source, "input_fingerprint": input_fingerprint(source),
            "config_sha256": config_hash(cfg), "model_variant": selection["selected"],
            "model_sha256": sha[selection["selected"]], "rows_in": n_in,
            "rows_scored": n_scored, "rows_quarantined": n_quarantined,
            "rows_skipped_already_scored": skipped, "quarantine_reasons": reasons,
            "rows_scored_per_variant": counts, "incremental": cfg.run.incremental,
            "drift": drift, "started_at": started,
            "finished_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        write_json_atomic(staging / RUN_MANIFEST, manifest)
        fault_point("score.before_publish")
        _publish(staging, final)
        q_final.parent.mkdir(parents=True, exist_ok=True)
        _publish(q_staging, q_final)
    finally:
        encoded.unpersist()
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(q_staging, ignore_errors=True)
    if drift["drifted"]:
        log.warning("drift above PSI %.2f in %s (PSI %s)", cfg.score.drift_threshold,
                    drift["drifted"], {c: round(drift["psi"][c], 3) for c in drift["drifted"]})
    update_manifest(out, "score", {**manifest, "published": str(final.relative_to(out)),
                                   "run_dates": published_dates(scores_dir)})
    log.info("score %s: %d in, %d scored, %d quarantined %s, %d skipped", run_date, n_in,
             n_scored, n_quarantined, reasons, skipped)
    return manifest


def _drift(spark: SparkSession, cfg: Config, rows: DataFrame, scored: DataFrame,
           selection: dict[str, Any]) -> dict[str, Any]:
    """PSI of the features (raw columns, or token counts for text) and of the selected
    model's scores against training."""
    from pyspark.sql import functions as F

    from sparkforge.jobs.preprocess import with_token_count
    from sparkforge.metrics.drift import drift_report, numeric_edges, profile

    model_dir = cfg.out / "model"
    ref_path = model_dir / "reference.json"
    if not ref_path.exists():
        return {"psi": {}, "threshold": cfg.score.drift_threshold, "drifted": []}
    reference = read_json(ref_path)
    feats = with_token_count(rows) if cfg.is_text else rows
    report = drift_report(reference, feats, cfg.score.drift_threshold)

    # Score reference: the selected model on the validation split, computed once.
    score_col = (F.col("prediction") if cfg.is_regression
                 else F.array_max(F.col("probability"))).alias("score")
    sref_path = model_dir / f"score_reference-{selection['selected']}.json"
    if not sref_path.exists():
        from sparkforge.infer import score_df

        pre = spark.read.parquet(str(cfg.out / "preprocessed")).filter(F.col("split") == "val")
        rel = selection["paths"][selection["selected"]]
        val_scores = score_df(pre, model_path=str((cfg.out / rel).resolve()),
                              sha256=sha256_file(cfg.out / rel),
                              inputs=["input_ids", "attention_mask"] if cfg.is_text
                              else ["features"], labels=read_json(model_dir / "labels.json"),
                              variant=selection["selected"]).select(score_col)
        write_json_atomic(sref_path, profile(val_scores, numeric_edges(val_scores, ["score"]),
                                             []))
    sreport = drift_report(read_json(sref_path), scored.select(score_col),
                           cfg.score.drift_threshold)
    report["psi"].update(sreport["psi"])
    report["drifted"] = sorted(report["drifted"] + sreport["drifted"])
    return report


def run_embed(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    """Sentence embeddings of a whole text table -> embeddings/run_date=YYYY-MM-DD/."""
    from sparkforge.compress.onnx_export import export_onnx
    from sparkforge.infer import embed_df
    from sparkforge.jobs.compress import load_trained

    if cfg.model_name != "minilm":
        raise ConfigError(f"score.mode=embed needs train.model=minilm (got {cfg.model_name!r})")
    out = cfg.out
    model, spec = load_trained(cfg)
    enc_path = out / "compressed" / "encoder" / "model.onnx"
    if not enc_path.exists():
        import numpy as np

        export_onnx(_Encoder(model), spec, enc_path,
                    {"input_ids": np.ones((2, 8), dtype=np.int64),
                     "attention_mask": np.ones((2, 8), dtype=np.int64)})
        update_manifest(out, "embed_model", {"path": str(enc_path.relative_to(out))},
                        [enc_path])
    fitted = fitted_from_model(cfg)
    keep = list(cfg.score.passthrough_columns)
    prep = prepare(spark, cfg, stage="score", fitted=fitted,
                   input_path=cfg.score.input or cfg.data.input, keep_columns=keep)
    encoded = encode(cfg, prep.kept, keep)
    emb = embed_df(encoded, model_path=str(enc_path.resolve()), sha256=sha256_file(enc_path),
                   batch_size=cfg.score.batch_size, passthrough=keep)
    final = out / "embeddings" / f"run_date={cfg.run.run_date}"
    staging = out / "embeddings" / STAGING / f"{final.name}.{uuid.uuid4().hex[:8]}"
    try:
        emb.write.mode("overwrite").parquet(str(staging))
        n = spark.read.parquet(str(staging)).count()
        _publish(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    n_q = prep.quarantine.count()
    summary = {"run_date": cfg.run.run_date, "rows_embedded": n, "rows_quarantined": n_q,
               "rows_in": n + n_q, "path": str(final.relative_to(out))}
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
