"""``sparkforge <stage> --config PATH [--set dotted.key=value ...]``.

Exit codes: 0 ok; 2 user error (config, input path or format, columns, output.dir,
master URL), a short message and no traceback; 3 data-quality stop (a quality gate, an
empty input, or an upstream stage that failed its gate); 4 runtime failure, its cause
first (the traceback with ``--verbose``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

EXIT_OK, EXIT_CONFIG, EXIT_DATA_QUALITY, EXIT_RUNTIME = 0, 2, 3, 4
STAGE_CHOICES = ("preprocess", "train", "compress", "score", "evaluate", "pipeline")

log = logging.getLogger("sparkforge")


def _parser() -> argparse.ArgumentParser:
    from sparkforge.generate import TASKS

    p = argparse.ArgumentParser(prog="sparkforge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage in STAGE_CHOICES:
        s = sub.add_parser(stage, help=f"run the {stage} stage" if stage != "pipeline"
                           else "run every stage in order")
        s.add_argument("--config", required=True, help="YAML file, e.g. conf/demo_text.yaml")
        s.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="override a config key, e.g. train.epochs=3")
        s.add_argument("--verbose", action="store_true",
                       help="print the traceback of a runtime failure (exit code 4) and "
                       "third-party libraries' INFO logs")
    d = sub.add_parser("demo-data", help="write the demo CSVs (Rotten Tomatoes, UCI Adult)")
    d.add_argument("--out", default="data", help="folder for the CSV files")
    g = sub.add_parser("generate", help="write a synthetic table of any size (Spark, in "
                       "parallel) with a learnable signal")
    g.add_argument("--rows", type=int, required=True, help="number of rows, e.g. 1000000")
    g.add_argument("--task", required=True, choices=TASKS)
    g.add_argument("--out", required=True, help="output folder (replaced)")
    g.add_argument("--format", dest="fmt", choices=("parquet", "csv"), default="parquet")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--partitions", type=int, default=0,
                   help="output partitions; 0: one per million rows, at least the "
                   "session's parallelism")
    g.add_argument("--master", default="local[*]", help="Spark master (spark.master)")
    g.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="a Spark property, e.g. spark.driver.memory=4g")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from sparkforge.progress import quiet_third_party

    args = _parser().parse_args(argv)
    level = os.environ.get("SPARKFORGE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level if level in logging.getLevelNamesMapping() else "INFO",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # onnx_ir / onnxscript log a line per initializer or folded constant: WARNING unless
    # --verbose asks for everything.
    quiet_third_party(getattr(args, "verbose", False))
    if args.stage == "demo-data":
        from sparkforge.datasets import write_demo_data

        write_demo_data(args.out)
        return EXIT_OK
    if args.stage == "generate":
        return _generate(args)

    from sparkforge.config import ConfigError, load_config
    from sparkforge.data.preflight import check_inputs
    from sparkforge.spark.session import check_connect, check_master

    try:
        cfg = load_config(args.config, args.overrides)
        check_master(cfg.spark)
        check_connect(cfg)
        check_inputs(cfg, args.stage)
    except ConfigError as e:
        print(f"sparkforge: config error: {e}", file=sys.stderr)
        return EXIT_CONFIG

    from sparkforge.data.prepare import DataQualityError
    from sparkforge.faults import fault_point
    from sparkforge.jobs import check_upstream, stage_fn
    from sparkforge.spark.session import get_session

    try:  # refuse before a JVM starts; stage_fn checks again for notebooks and pipelines
        check_upstream(cfg, args.stage)
    except DataQualityError as e:
        print(f"sparkforge: data-quality stop: {e}", file=sys.stderr)
        return EXIT_DATA_QUALITY
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    spark = None
    try:
        fault_point("cli.before_session")
        spark = get_session(cfg.spark)
        stage_fn(args.stage)(spark, cfg)
    except ConfigError as e:
        print(f"sparkforge: config error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except DataQualityError as e:
        print(f"sparkforge: data-quality stop: {e}", file=sys.stderr)
        return EXIT_DATA_QUALITY
    except Exception as e:  # the one place that turns any failure into exit code 4
        print(f"sparkforge: {args.stage} failed: {_cause(e)}", file=sys.stderr)
        if args.verbose:
            traceback.print_exc()
        else:
            print("sparkforge: rerun with --verbose for the traceback", file=sys.stderr)
        return EXIT_RUNTIME
    finally:
        if spark is not None:
            spark.stop()
    return EXIT_OK


def _generate(args: argparse.Namespace) -> int:
    """``sparkforge generate``: argument errors exit 2 before a JVM starts."""
    from sparkforge.config import ConfigError, SparkConfig
    from sparkforge.generate import write_synthetic
    from sparkforge.spark.session import check_master, get_session

    if args.rows < 1 or args.partitions < 0:
        bad = f"--rows {args.rows}" if args.rows < 1 else f"--partitions {args.partitions}"
        print(f"sparkforge: generate: {bad}: use a positive number (partitions: 0 or more)",
              file=sys.stderr)
        return EXIT_CONFIG
    try:
        conf = dict(kv.split("=", 1) for kv in args.conf)
        spark_cfg = SparkConfig(master=args.master, app_name="sparkforge-generate", conf=conf)
    except (ValueError, ConfigError) as e:
        print(f"sparkforge: generate: --conf {args.conf}: use KEY=VALUE ({e})", file=sys.stderr)
        return EXIT_CONFIG
    try:  # the stages' own check: a master URL Spark cannot parse is a user error
        check_master(spark_cfg)
    except ConfigError as e:
        print(f"sparkforge: generate: config error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    spark = None
    try:
        spark = get_session(spark_cfg)
        write_synthetic(spark, args.rows, args.task, args.out, fmt=args.fmt, seed=args.seed,
                        partitions=args.partitions)
    except Exception as e:
        print(f"sparkforge: generate failed: {_cause(e)}", file=sys.stderr)
        return EXIT_RUNTIME
    finally:
        if spark is not None:
            spark.stop()
    print(f"sparkforge: wrote {args.rows:,} {args.task} rows to {args.out} ({args.fmt})")
    return EXIT_OK


def _cause(e: BaseException) -> str:
    """The innermost cause's type and message, first line of a Java error included."""
    root = e
    while root.__cause__ is not None:
        root = root.__cause__
    text = str(root).strip()
    java = getattr(root, "java_exception", None)
    if java is not None:  # py4j: str() is the whole Java stack trace
        try:
            text = str(java.toString())
        except Exception:  # the JVM may be gone
            text = text.splitlines()[0] if text else ""
    first = text.splitlines()[0] if text else ""
    outer = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
    where = f" (in {type(e).__name__}: {outer})" if root is not e else ""
    return f"{type(root).__name__}: {first[:1000]}{where}"


def entrypoint() -> None:
    sys.exit(main())
