"""Run pipeline stages in one Spark session with training's test hooks (fault tests).

    python tests/cluster/run_stages.py --config C [--set k=v ...] [--stages a,b]
                                       [--train-hooks JSON] [--summary OUT.json]

The CLI has no way to install :mod:`sparkforge.train.hooks` (test-only), so the cluster
fixture runs the stages through this script: the same ``run_<stage>(spark, cfg)`` entry
points the CLI calls, in the same order, on one session built by ``get_session``, with
``--train-hooks`` (``TrainHooks.to_json()``) installed around them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("SPARKFORGE_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--stages", default="preprocess,train,compress,score,evaluate")
    ap.add_argument("--train-hooks", default="{}")
    ap.add_argument("--summary")
    args = ap.parse_args(argv)

    from sparkforge.config import load_config
    from sparkforge.jobs import stage_fn
    from sparkforge.spark.session import get_session
    from sparkforge.train import hooks

    cfg = load_config(args.config, args.overrides)
    spark = get_session(cfg.spark)
    results = {}
    try:
        with hooks.installed(hooks.TrainHooks.from_json(args.train_hooks)):
            for stage in args.stages.split(","):
                results[stage] = stage_fn(stage)(spark, cfg)
    finally:
        spark.stop()
    if args.summary:
        Path(args.summary).write_text(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
