"""Read the raw input as users have it: a path or a catalog table, in any supported format.

Formats: ``csv``, ``json`` (JSON lines; multi-line JSON with ``multiLine: true``),
``parquet``, ``orc``, ``text`` (one row per line, column ``value``). Compressed text
inputs (``.gz``, ``.bz2``, ...) are decompressed by Spark's codecs; Parquet and ORC carry
their own. ``data.input`` may be one file, a folder, a glob or a partitioned folder
(``key=value/`` subfolders become columns).

Reader options: ``data.format_options[<format>]`` (only the format being read), then
``data.options`` on top. So the generic configs' CSV settings (``multiLine`` for quoted
newlines) never reach a JSON-lines read, where Spark would take the whole file as one
document.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sparkforge.config import Config, ConfigError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

CORRUPT = "_corrupt_record"

# Options each of Spark's file readers knows (lower case; Spark matches them case-
# insensitively), beside the generic file-source ones. Used to warn about a typo, which
# Spark would ignore silently.
_GENERIC = {"pathglobfilter", "recursivefilelookup", "modifiedbefore", "modifiedafter",
            "basepath", "ignorecorruptfiles", "ignoremissingfiles", "compression", "mode",
            "columnnameofcorruptrecord"}
KNOWN_OPTIONS: dict[str, set[str]] = {
    "csv": {"sep", "delimiter", "encoding", "charset", "quote", "quoteall", "escape",
            "escapequotes", "comment", "header", "enforceschema", "inferschema",
            "preferdate", "samplingratio", "ignoreleadingwhitespace",
            "ignoretrailingwhitespace", "nullvalue", "nanvalue", "positiveinf",
            "negativeinf", "dateformat", "timestampformat", "timestampntzformat",
            "enabledatetimeparsingfallback", "maxcolumns", "maxcharspercolumn",
            "maxmalformedlogperpartition", "multiline", "chartoescapequoteescaping",
            "emptyvalue", "locale", "linesep", "unescapedquotehandling", "timezone"},
    "json": {"primitivesasstring", "prefersdecimal", "allowcomments", "allowunquotedfieldnames",
             "allowsinglequotes", "allownumericleadingzeros", "allowbackslashescapingany",
             "allowunquotedcontrolchars", "dropfieldifallnull", "multiline", "encoding",
             "linesep", "samplingratio", "dateformat", "timestampformat",
             "timestampntzformat", "enabledatetimeparsingfallback", "allownonnumericnumbers",
             "locale", "timezone", "prefertimestampntz", "usesunsafeparser"},
    "parquet": {"mergeschema", "datetimerebasemode", "int96rebasemode"},
    "orc": {"mergeschema"},
    "text": {"wholetext", "linesep", "encoding"},
}


def reader_options(cfg: Config) -> dict[str, str]:
    """The options handed to the reader of ``data.format``."""
    d = cfg.data
    opts = {**d.format_options.get(d.format, {}), **d.options}
    known = KNOWN_OPTIONS[d.format] | _GENERIC
    for k in opts:
        if k.lower() not in known:
            log.warning("data.options.%s is not an option Spark's %s reader knows; it is "
                        "passed on but probably ignored", k, d.format)
    return opts


def describe_source(cfg: Config, input_path: str | None = None) -> str:
    """``data.input='x.csv'`` or ``data.table='db.t'``: for messages."""
    path = input_path or cfg.data.input
    return f"data.input={path!r}" if path else f"data.table={cfg.data.table!r}"


def _unreadable(cfg: Config, source: str, e: Exception) -> ConfigError:
    cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return ConfigError(f"{source}: cannot be read as data.format={cfg.data.format} "
                       f"with options {reader_options(cfg)}: {cause[:500]}; check data.format "
                       "(csv, json, parquet, orc, text) and data.options")


def read_raw(spark: SparkSession, cfg: Config, input_path: str | None = None) -> DataFrame:
    """Read ``input_path`` (default ``data.input``, or ``data.table``) keeping malformed
    records (PERMISSIVE mode + a corrupt-record column for CSV and JSON)."""
    from pyspark.errors import PySparkException
    from pyspark.sql import types as T

    d = cfg.data
    path = input_path or d.input
    source = describe_source(cfg, input_path)
    if not path:
        try:
            return spark.table(d.table)
        except PySparkException as e:
            raise ConfigError(f"data.table={d.table!r}: {str(e).splitlines()[0][:500]}; "
                              "name an existing table (db.table) or set data.input") from e
    opts = reader_options(cfg)
    try:
        if d.format == "csv":
            # Read every column as a string, then decide types ourselves: Spark's inferSchema
            # would null out a bad value silently, and we want it quarantined with a reason.
            header = spark.read.options(**opts).csv(path).schema
            schema = T.StructType([T.StructField(f.name, T.StringType()) for f in header.fields]
                                  + [T.StructField(CORRUPT, T.StringType())])
            df = (spark.read.options(**opts).schema(schema).option("mode", "PERMISSIVE")
                  .option("columnNameOfCorruptRecord", CORRUPT).csv(path))
        elif d.format == "json":
            df = (spark.read.options(**opts).option("mode", "PERMISSIVE")
                  .option("columnNameOfCorruptRecord", CORRUPT).json(path))
            # Spark refuses queries that touch only the corrupt column of raw JSON; cache first.
            df = df.cache() if CORRUPT in df.columns else df
        elif d.format == "parquet":
            df = spark.read.options(**opts).parquet(path)
        elif d.format == "orc":
            df = spark.read.options(**opts).orc(path)
        else:
            df = spark.read.options(**opts).text(path)
    except (PySparkException, ValueError) as e:
        raise _unreadable(cfg, source, e) from e
    except Exception as e:  # py4j errors (e.g. an unknown charset) carry the Java cause
        if type(e).__name__ != "Py4JJavaError":
            raise
        raise _unreadable(cfg, source, e) from e
    if not [c for c in df.columns if c != CORRUPT]:
        from sparkforge.data.prepare import DataQualityError

        raise DataQualityError(f"{source} (data.format={d.format}): read 0 rows and 0 columns; "
                               "the input is empty. Point data.input at the data, or check "
                               "that the files are not empty")
    return df
