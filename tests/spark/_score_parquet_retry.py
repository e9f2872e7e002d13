"""``score_parquet`` in its own local session that retries failed tasks (``local[2,2]``:
2 cores, 2 attempts per task; the shared test session allows 1), for
``test_score.py::test_score_parquet_retries_a_failed_attempt_and_commits_it_once``.

The caller sets ``SPARKFORGE_FAULTS`` so that the first attempt to finish its file raises
(``raise-once``). Prints one JSON line: the result and what the destination holds.

Usage: python _score_parquet_retry.py SOURCE DEST MODEL SHA256 LABELS_JSON VARIANT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    source, dest, model, sha, labels, variant = sys.argv[1:7]
    from sparkforge.config import SparkConfig
    from sparkforge.infer import score_parquet
    from sparkforge.models import task_input_names
    from sparkforge.spark.session import get_session

    spark = get_session(SparkConfig(master="local[2,2]", app_name="score-parquet-retry"),
                        extra={"spark.ui.enabled": "false"})
    try:
        r = score_parquet(spark, source, dest, model_path=model, sha256=sha,
                          inputs=task_input_names(text=False), labels=json.loads(labels),
                          variant=variant, tasks=3, batch_rows=64)
    finally:
        spark.stop()
    print(json.dumps({"rows": r.rows, "tasks": r.tasks, "files": list(r.files),
                      "dest": sorted(p.name for p in Path(dest).iterdir())}))


if __name__ == "__main__":
    main()
