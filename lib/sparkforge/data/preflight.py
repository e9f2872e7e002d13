"""Checks of the input that need no Spark: the path exists, the named columns exist.

Run by the CLI right after the config loads, so a typo in a column name or path
exits with code 2 in milliseconds instead of failing inside a Spark job.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
from pathlib import Path

from sparkforge.config import Config, ConfigError

log = logging.getLogger(__name__)

_REMOTE_PREFIXES = ("hdfs:", "s3:", "s3a:", "s3n:", "gs:", "abfs:", "abfss:", "wasb:", "dbfs:")


def input_files(pattern: str) -> list[Path]:
    """Local files matched by ``pattern`` (a file, a folder or a glob)."""
    p = Path(pattern)
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(("_", ".")))
    # glob.glob, not Path.glob: the pattern may be absolute (Path.glob takes relative ones)
    matches = glob.glob(pattern, recursive=True)  # noqa: PTH207
    return sorted(Path(m) for m in matches if Path(m).is_file())


def _columns(cfg: Config, first: Path) -> list[str] | None:
    d = cfg.data
    opts = {k.lower(): v for k, v in d.options.items()}
    if d.format == "text":
        return ["value"]
    if d.format == "csv":
        if opts.get("header", "false").lower() != "true":
            return None  # Spark names the columns _c0, _c1, ...: nothing to check here
        sep = opts.get("sep", opts.get("delimiter", ","))
        with open(first, newline="", encoding=opts.get("encoding", "utf-8"),
                  errors="replace") as fh:
            header = next(csv.reader(fh, delimiter=sep), [])
        return [h.strip() for h in header]
    if d.format == "json":
        if opts.get("multiline", "false").lower() == "true":
            return None
        with open(first, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.strip():
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError:
                        return None  # a malformed first record: quarantine deals with it
                    return list(obj) if isinstance(obj, dict) else None
        return None
    if d.format == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(first).names)
    return None


def check_inputs(cfg: Config, stage: str = "preprocess") -> None:
    """Raise ConfigError when ``data.input`` matches nothing or a named column is absent.

    ``score`` needs only its input (``score.input``, else ``data.input``) and the run
    directory; ``evaluate`` reads the run directory only."""
    d = cfg.data
    if stage == "evaluate":
        return
    if stage == "score" and (cfg.score.input or not d.input):
        if not cfg.score.input:
            raise ConfigError("score.input='': set the table to score, e.g. --set "
                              "score.input=data/new_customers.csv (or set data.input)")
        if not cfg.score.input.startswith(_REMOTE_PREFIXES) and not input_files(
                cfg.score.input):
            raise ConfigError(f"score.input={cfg.score.input!r}: no file matches this path "
                              "or glob; check the path (relative paths are relative to the "
                              "working directory)")
        return
    if not d.input:
        raise ConfigError(f"data.input='': {stage} needs it; set it to a file, folder or glob, "
                          "e.g. --set data.input=data/reviews.csv")
    if d.input.startswith(_REMOTE_PREFIXES):
        log.info("data.input %s is remote; existence and columns are checked by Spark", d.input)
        return
    files = input_files(d.input)
    if d.format == "parquet":
        files = [f for f in files if f.suffix == ".parquet"] or files
    if not files:
        raise ConfigError(f"data.input={d.input!r}: no file matches this path or glob; check the "
                          "path (relative paths are relative to the working directory) or run "
                          "`make demo-data` for the demo inputs")
    cols = _columns(cfg, files[0])
    if cols is None:
        return
    wanted = {"data.label_column": d.label_column, "data.text_column": d.text_column,
              "data.id_column": d.id_column}
    for i, c in enumerate(d.feature_columns or []):
        wanted[f"data.feature_columns[{i}]"] = c
    for key, col in wanted.items():
        if col and col not in cols:
            raise ConfigError(f"{key}={col!r}: no such column in {files[0]}; its columns are "
                              f"{', '.join(cols)}")
