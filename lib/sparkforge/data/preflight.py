"""Checks that need no Spark: the input exists and is readable in ``data.format``, the
named columns exist, ``output.dir`` is writable.

Run by the CLI right after the config loads, so a typo in a column name, a path or a
format exits with code 2 in milliseconds instead of failing inside a Spark job.
Compressed text inputs are read through their codec (gzip, bz2, xz, deflate), so their
header is checked like a plain file's; a partitioned folder's ``key=value`` folders count
as columns, as Spark makes them.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import glob
import gzip
import io
import json
import logging
import lzma
import tempfile
import typing
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sparkforge.config import Config, ConfigError
from sparkforge.data.readers import reader_options

log = logging.getLogger(__name__)

_REMOTE_PREFIXES = ("hdfs:", "s3:", "s3a:", "s3n:", "gs:", "abfs:", "abfss:", "wasb:", "dbfs:")
_SUFFIX_FORMAT = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json",
                  ".ndjson": "json", ".parquet": "parquet", ".orc": "orc", ".txt": "text"}
_COMPRESSED = (".gz", ".bz2", ".xz", ".deflate", ".snappy", ".lz4", ".zst")
# JSON records looked at for the column check; a column absent from them is only an error
# when they were all the records (Spark's JSON schema is the union over every record).
_JSON_SAMPLE_RECORDS = 2000
_JSON_MULTILINE_MAX_BYTES = 32 << 20


def _hidden(p: Path, root: Path) -> bool:
    # Spark skips files and folders starting with _ or . (_SUCCESS, .crc, _temporary)
    rel = p.relative_to(root).parts if p.is_relative_to(root) else (p.name,)
    return any(part.startswith(("_", ".")) for part in rel)


def input_files(pattern: str) -> list[Path]:
    """Local files matched by ``pattern`` (a file, a folder or a glob), as Spark lists them."""
    p = Path(pattern)
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file() and not _hidden(f, p))
    # glob.glob, not Path.glob: the pattern may be absolute (Path.glob takes relative ones)
    matches = glob.glob(pattern, recursive=True)  # noqa: PTH207
    files: list[Path] = []
    for m in map(Path, matches):
        if m.is_file() and not m.name.startswith(("_", ".")):
            files.append(m)
        elif m.is_dir():
            files += input_files(str(m))
    return sorted(set(files))


def _partition_columns(pattern: str, f: Path) -> list[str]:
    """``key`` of each ``key=value`` folder between the input's root and ``f``."""
    return [part.split("=", 1)[0] for part in f.parent.parts if "=" in part
            and not part.startswith(("_", "."))
            and part not in Path(pattern).parts]


def _open_binary(f: Path) -> IO[bytes] | None:
    """``f`` decompressed by its suffix's codec; None for a codec Python lacks."""
    suffix = f.suffix.lower()
    if suffix == ".gz":
        return typing.cast(IO[bytes], gzip.open(f, "rb"))
    if suffix == ".bz2":
        return bz2.open(f, "rb")
    if suffix == ".xz":
        return lzma.open(f, "rb")
    if suffix == ".deflate":
        return io.BytesIO(zlib.decompress(f.read_bytes()))
    if suffix in _COMPRESSED:
        return None
    return open(f, "rb")


def _lines(f: Path, encoding: str) -> Iterator[str] | None:
    fh = _open_binary(f)
    if fh is None:
        return None

    def gen() -> Iterator[str]:
        with fh, io.TextIOWrapper(fh, encoding=encoding, errors="replace", newline="") as t:
            yield from t
    return gen()


def _format_hint(f: Path, head: bytes) -> str:
    if head.startswith(b"PAR1"):
        return "it looks like Parquet: set data.format=parquet"
    if head.startswith(b"ORC"):
        return "it looks like ORC: set data.format=orc"
    stem = f.name
    for c in _COMPRESSED:
        stem = stem.removesuffix(c)
    guess = _SUFFIX_FORMAT.get(Path(stem).suffix.lower())
    return f"its name suggests data.format={guess}" if guess else "check data.format"


def _columns(cfg: Config, pattern: str, files: list[Path]) -> list[str] | None:
    """The columns Spark will see, or None when they cannot be known without Spark."""
    d = cfg.data
    fmt = d.format
    opts = {k.lower(): v for k, v in reader_options(cfg).items()}
    encoding = opts.get("encoding", opts.get("charset", "utf-8"))
    first = files[0]
    parts = _partition_columns(pattern, first)
    if fmt in ("parquet", "orc"):
        try:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                names = list(pq.read_schema(first).names)
            else:
                import pyarrow.orc as po

                names = list(po.ORCFile(str(first)).schema.names)
        except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... on a foreign file
            head = first.open("rb").read(4)
            raise ConfigError(f"data.format={fmt!r}: {first} is not a {fmt} file ({e}); "
                              f"{_format_hint(first, head)}") from e
        return names + parts
    fh = _open_binary(first)
    if fh is None:
        return None
    with fh:
        head = fh.read(4)
    if head.startswith((b"PAR1", b"ORC")):
        raise ConfigError(f"data.format={fmt!r}: {first} is binary; {_format_hint(first, head)}")
    if fmt == "text":
        return ["value", *parts]
    if fmt == "csv":
        if opts.get("header", "false").lower() != "true":
            return None  # Spark names the columns _c0, _c1, ...: nothing to check here
        sep = opts.get("sep", opts.get("delimiter", ","))
        lines = _lines(first, encoding)
        assert lines is not None
        header = next(csv.reader(lines, delimiter=sep[:1] or ","), [])
        if not header:
            return None  # an empty file: preprocess reports what it read (exit 3)
        return [h.strip() for h in header] + parts
    # json
    keys: dict[str, None] = {}
    if opts.get("multiline", "false").lower() == "true":
        for f in files:
            if f.stat().st_size > _JSON_MULTILINE_MAX_BYTES:
                return None
            fb = _open_binary(f)
            if fb is None:
                return None
            with fb:
                text = fb.read().decode(encoding, errors="replace")
            if not text.strip():
                continue
            try:
                doc = json.loads(text)
            except json.JSONDecodeError as e:
                raise ConfigError(f"data.format='json' with multiLine: {f} is not one JSON "
                                  f"document ({e}); for JSON lines (one record a line) drop "
                                  f"the multiLine option; {_format_hint(f, head)}") from e
            for rec in doc if isinstance(doc, list) else [doc]:
                if isinstance(rec, dict):
                    keys.update(dict.fromkeys(rec))
        return [*keys, *parts] if keys else None
    seen = parsed = 0
    for f in files:
        lines = _lines(f, encoding)
        if lines is None:
            return None
        for line in lines:
            if not line.strip():
                continue
            seen += 1
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = None  # a malformed record: quarantine deals with it
            if isinstance(rec, dict):
                parsed += 1
                keys.update(dict.fromkeys(rec))
            if seen >= _JSON_SAMPLE_RECORDS:
                break
        if seen >= _JSON_SAMPLE_RECORDS:
            break
    if seen and not parsed:
        raise ConfigError(f"data.format='json': no line of {first} is a JSON record; "
                          f"{_format_hint(first, head)}")
    if seen >= _JSON_SAMPLE_RECORDS:
        return None  # a sample: a column absent from it may still be in a later record
    return [*keys, *parts] if keys else None


def _check_encoding(cfg: Config) -> None:
    opts = {k.lower(): (k, v) for k, v in reader_options(cfg).items()}
    for name in ("encoding", "charset"):
        if name in opts:
            key, value = opts[name]
            try:
                codecs.lookup(value)
            except LookupError:
                raise ConfigError(f"data.options.{key}={value!r}: unknown encoding; use e.g. "
                                  "UTF-8, ISO-8859-1, windows-1252 or UTF-16") from None


def check_source(cfg: Config, pattern: str, wanted: dict[str, str | None], what: str) -> None:
    """Raise ConfigError when ``pattern`` matches nothing, is not in ``data.format``, or lacks
    a column of ``wanted`` ({config key: column})."""
    if pattern.startswith(_REMOTE_PREFIXES):
        log.info("%s %s is remote; existence and columns are checked by Spark", what, pattern)
        return
    files = input_files(pattern)
    if cfg.data.format in ("parquet", "orc"):
        files = [f for f in files if f.suffix == f".{cfg.data.format}"] or files
    if not files:
        raise ConfigError(f"{what}={pattern!r}: no file matches this path or glob; check the "
                          "path (relative paths are relative to the working directory) or run "
                          "`make demo-data` for the demo inputs")
    if not any(f.stat().st_size for f in files):
        return  # empty files: preprocess reports what it read (exit 3)
    files = [f for f in files if f.stat().st_size] or files
    cols = _columns(cfg, pattern, files)
    if cols is None:
        return
    for key, col in wanted.items():
        if col and col not in cols:
            name = key if key.startswith("the ") else f"{key}={col!r}"
            raise ConfigError(f"{name}: no such column in {files[0]}; its columns are "
                              f"{', '.join(cols) or '(none)'}")


def _score_columns(cfg: Config) -> dict[str, str | None]:
    """The columns the model was trained on: model/preprocessor.json, else the config."""
    d = cfg.data
    if cfg.is_text:
        return {"data.text_column": d.text_column}
    pre = cfg.out / "model" / "preprocessor.json"
    if pre.is_file():
        try:
            fitted: dict[str, Any] = json.loads(pre.read_text())
            cols = [*fitted.get("numeric", {}), *fitted.get("categorical", {})]
        except (OSError, ValueError, TypeError):
            cols = []
        return {f"the training feature column {c!r} (model/preprocessor.json)": c
                for c in cols}
    return {f"data.feature_columns[{i}]": c for i, c in enumerate(d.feature_columns or [])}


def check_output_dir(cfg: Config) -> None:
    """``output.dir`` is a folder (or can be made one) that this user may write to."""
    out = cfg.output.dir
    if out.startswith(_REMOTE_PREFIXES):
        return
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"output.dir={out!r}: a file is in the way; point output.dir at a "
                          "folder")
    try:  # the run makes this folder anyway; a probe file proves it is writable
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".sparkforge-probe-"):
            pass
    except OSError as e:
        raise ConfigError(f"output.dir={out!r}: not writable ({e.strerror or e}); choose a "
                          "folder you can write to, e.g. --set output.dir=runs/x") from None


def check_inputs(cfg: Config, stage: str = "preprocess") -> None:
    """Raise ConfigError when the input ``stage`` reads is missing, unreadable in
    ``data.format``, or lacks a named column; or when ``output.dir`` is not writable.

    ``score`` needs only its input (``score.input``, else ``data.input``) and the run
    directory (the training's data settings come from ``model/config.json`` when
    ``data.input`` is empty); ``train``, ``compress`` and ``evaluate`` read the run
    directory only."""
    d = cfg.data
    _check_encoding(cfg)
    if stage in ("preprocess", "pipeline"):
        if d.input:
            wanted: dict[str, str | None] = {
                "data.label_column": d.label_column, "data.text_column": d.text_column,
                "data.id_column": d.id_column}
            for i, c in enumerate(d.feature_columns or []):
                wanted[f"data.feature_columns[{i}]"] = c
            check_source(cfg, d.input, wanted, "data.input")
        elif d.table:
            log.info("data.table %s is checked by Spark", d.table)
        else:
            raise ConfigError(f"data.input='': {stage} needs it; set it to a file, folder or "
                              "glob, e.g. --set data.input=data/reviews.csv (or data.table to "
                              "a catalog table)")
    elif stage == "score" and cfg.score.mode == "predict":
        if not (cfg.score.input or d.input or d.table):
            raise ConfigError("score.input='': set the table to score, e.g. --set "
                              "score.input=data/new_customers.csv (or set data.input)")
        if not d.input and not d.table:
            from sparkforge.artifacts import scoring_config

            cfg = scoring_config(cfg)  # the training's column names
        source, what = (cfg.score.input, "score.input") if cfg.score.input else (
            cfg.data.input, "data.input")
        if source:
            check_source(cfg, source, _score_columns(cfg), what)
    check_output_dir(cfg)
