"""``sparkforge <stage> --config PATH [--set dotted.key=value ...]``.

Exit codes: 0 ok, 2 configuration error (before any Spark work), 3 data-quality
gate, 4 runtime failure.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

EXIT_OK, EXIT_CONFIG, EXIT_DATA_QUALITY, EXIT_RUNTIME = 0, 2, 3, 4
STAGE_CHOICES = ("preprocess", "train", "compress", "score", "evaluate", "pipeline")

log = logging.getLogger("sparkforge")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sparkforge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage in STAGE_CHOICES:
        s = sub.add_parser(stage, help=f"run the {stage} stage" if stage != "pipeline"
                           else "run every stage in order")
        s.add_argument("--config", required=True, help="YAML file, e.g. conf/demo_text.yaml")
        s.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="override a config key, e.g. train.epochs=3")
    d = sub.add_parser("demo-data", help="write the demo CSVs (Rotten Tomatoes, UCI Adult)")
    d.add_argument("--out", default="data", help="folder for the CSV files")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("SPARKFORGE_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = _parser().parse_args(argv)
    if args.stage == "demo-data":
        from sparkforge.datasets import write_demo_data

        write_demo_data(args.out)
        return EXIT_OK

    from sparkforge.config import ConfigError, load_config
    from sparkforge.data.preflight import check_inputs

    try:
        cfg = load_config(args.config, args.overrides)
        check_inputs(cfg, args.stage)
    except ConfigError as e:
        print(f"sparkforge: config error: {e}", file=sys.stderr)
        return EXIT_CONFIG

    from sparkforge.data.prepare import DataQualityError
    from sparkforge.jobs import stage_fn
    from sparkforge.spark.session import get_session

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    spark = get_session(cfg.spark)
    try:
        stage_fn(args.stage)(spark, cfg)
    except ConfigError as e:
        print(f"sparkforge: config error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except DataQualityError as e:
        print(f"sparkforge: data-quality gate: {e}", file=sys.stderr)
        return EXIT_DATA_QUALITY
    except Exception as e:  # the one place that turns any failure into exit code 4
        log.exception("stage %s failed", args.stage)
        print(f"sparkforge: {args.stage} failed: {type(e).__name__}: {str(e)[-2000:]}",
              file=sys.stderr)
        return EXIT_RUNTIME
    finally:
        spark.stop()
    return EXIT_OK


def entrypoint() -> None:
    sys.exit(main())
