"""Stage 4a: preprocessed/ -> scores/ with onnxruntime in mapInPandas.

The selected variant scores every row of every split; the other variants score
the test split, so evaluation can compare them on the same rows.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sparkforge.artifacts import read_json, update_manifest, verify_artifact
from sparkforge.config import Config, ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def run_score(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from sparkforge.infer import score_df

    out = cfg.out
    sel_path = out / "compressed" / "selection.json"
    if not sel_path.exists():
        raise ConfigError(f"output.dir={str(out)!r}: no compressed/selection.json; run "
                          "`sparkforge compress` with this config first")
    selection = read_json(sel_path)
    labels = read_json(out / "model" / "labels.json")
    inputs = ["input_ids", "attention_mask"] if cfg.is_text else ["features"]
    threads = int(spark.conf.get("spark.task.cpus", "1") or "1")
    data = spark.read.parquet(str(out / "preprocessed"))
    parts = []
    for variant, rel in selection["paths"].items():
        path = out / rel
        sha = verify_artifact(out, path)
        rows = data if variant == selection["selected"] else data.filter(F.col("split") == "test")
        parts.append(score_df(rows, model_path=str(path.resolve()), sha256=sha, inputs=inputs,
                              labels=labels, variant=variant, batch_size=cfg.score.batch_size,
                              threads=threads))
    scored = parts[0]
    for p in parts[1:]:
        scored = scored.unionByName(p)
    scores_path = out / "scores"
    scored.write.mode("overwrite").parquet(str(scores_path))
    written = spark.read.parquet(str(scores_path))
    counts = {r["model_variant"]: r["count"]
              for r in written.groupBy("model_variant").count().collect()}
    rows_in = data.count()
    summary = {"rows_in": rows_in, "rows_scored": counts.get(selection["selected"], 0),
               "rows_quarantined": 0, "rows_scored_per_variant": counts,
               "selected": selection["selected"]}
    if summary["rows_scored"] != rows_in:
        raise RuntimeError(f"scored {summary['rows_scored']} rows but read {rows_in}")
    update_manifest(out, "score", summary)
    log.info("score: %s", summary)
    return summary
