"""One small table written in every input format, compression and layout sparkforge reads.

The rows carry one null label, one exact duplicate and (text) one empty text, so each
written copy has a known outcome counted from the rows themselves: the same kept rows
and the same quarantine reasons whatever the format.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import json
from collections import Counter
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.orc as po
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {"text": ROOT / "conf" / "text_classification.yaml",
           "tabular": ROOT / "conf" / "tabular_classification.yaml"}
TEXT_FORMATS = ("csv", "jsonl", "json_multiline", "text")
COMPRESSIONS = ("none", "gz", "bz2")
LAYOUTS = ("file", "folder", "glob", "partitioned")
# Parquet and ORC compress inside the file: each layout uses another of their codecs.
BINARY_CODECS = {"parquet": ("snappy", "gzip", "zstd", "none"),
                 "orc": ("zlib", "snappy", "zstd", "uncompressed")}
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"  # Spark reads this folder's key as null
N_GOOD = 100


def rows(kind: str) -> list[dict[str, Any]]:
    """N_GOOD distinct labelled rows, then a null label, a duplicate and (text) an empty text."""
    if kind == "text":
        out: list[dict[str, Any]] = [
            {"text": f'review {i}: "quoted", with a comma', "label": "pos" if i % 3 else "neg"}
            for i in range(N_GOOD)]
        out.append({"text": "a review nobody labelled", "label": None})
        out.append(dict(out[5]))
        out.append({"text": "", "label": "pos"})
        return out
    out = [{"color": f"c{i % 4}", "size": i, "label": "abc"[i % 3]} for i in range(N_GOOD)]
    out.append({"color": "c9", "size": 999, "label": None})
    out.append(dict(out[7]))
    return out


def expected(kind: str) -> tuple[int, dict[str, int]]:
    """(rows kept, quarantine reasons) counted from the rows, not from sparkforge."""
    reasons: Counter[str] = Counter()
    seen: set[tuple[Any, ...]] = set()
    kept = 0
    for r in rows(kind):
        content = (r["text"],) if kind == "text" else (r["color"], r["size"])
        if r["label"] is None:
            reasons["null_label"] += 1
        elif kind == "text" and not r["text"]:
            reasons["empty_text"] += 1
        elif content in seen and kind == "text":  # tabular repeats are kept (dedupe auto)
            reasons["duplicate"] += 1
        else:
            seen.add(content)
            kept += 1
    return kept, dict(reasons)


def cases(kind: str) -> list[tuple[str, str, str]]:
    """(format, compression, layout): the full product for this config."""
    out = []
    for fmt in (*TEXT_FORMATS, "parquet", "orc"):
        if fmt == "text" and kind != "text":
            continue
        for i, layout in enumerate(LAYOUTS):
            # a text file has only the line: its label must come from the folder names
            if fmt == "text" and layout != "partitioned":
                continue
            comps = COMPRESSIONS if fmt in TEXT_FORMATS else (BINARY_CODECS[fmt][i],)
            out += [(fmt, comp, layout) for comp in comps]
    return out


def _open(path: Path, comp: str) -> IO[str]:
    if comp == "gz":
        return gzip.open(path, "wt", encoding="utf-8", newline="")
    if comp == "bz2":
        return bz2.open(path, "wt", encoding="utf-8", newline="")
    return open(path, "w", encoding="utf-8", newline="")


def _write_one(path: Path, fmt: str, comp: str, recs: list[dict[str, Any]],
               columns: list[str]) -> None:
    if fmt in ("parquet", "orc"):
        table = pa.Table.from_pylist(recs, schema=pa.schema(
            [(c, pa.int64() if c == "size" else pa.string()) for c in columns]))
        if fmt == "parquet":
            pq.write_table(table, path, compression=comp)
        else:
            po.write_table(table, str(path), compression=comp)
        return
    with _open(path, comp) as fh:
        if fmt == "csv":
            w = csv.writer(fh)
            w.writerow(columns)
            w.writerows([r[c] for c in columns] for r in recs)
        elif fmt == "jsonl":
            fh.writelines(json.dumps(r) + "\n" for r in recs)
        elif fmt == "json_multiline":
            json.dump(recs, fh, indent=2)
        else:
            fh.writelines(r["text"] + "\n" for r in recs)


def write(root: Path, kind: str, fmt: str, comp: str, layout: str) -> tuple[str, list[str]]:
    """Write the rows; return (data.input, --set overrides for format and options)."""
    recs = rows(kind)
    ext = {"jsonl": "json", "json_multiline": "json", "text": "txt"}.get(fmt, fmt)
    if fmt in TEXT_FORMATS and comp != "none":
        ext += f".{comp}"
    columns = list(recs[0])
    chunks = [recs[i::3] for i in range(3)]
    root.mkdir(parents=True, exist_ok=True)
    if layout == "file":
        _write_one(root / f"data.{ext}", fmt, comp, recs, columns)
        source = str(root / f"data.{ext}")
    elif layout in ("folder", "glob"):
        for i, chunk in enumerate(chunks):
            _write_one(root / f"part-{i}.{ext}", fmt, comp, chunk, columns)
        (root / "_SUCCESS").write_text("")
        (root / "README.md").write_text("not data: the glob leaves it out\n")
        source = str(root / f"part-*.{ext}") if layout == "glob" else str(root)
        if layout == "folder":
            (root / "README.md").unlink()
    else:
        by_label: dict[str | None, list[dict[str, Any]]] = {}
        for r in recs:
            by_label.setdefault(r["label"], []).append(r)
        inner = [c for c in columns if c != "label"]
        for label, group in by_label.items():
            folder = root / f"label={NULL_PARTITION if label is None else label}"
            folder.mkdir()
            _write_one(folder / f"part-0.{ext}", fmt, comp,
                       [{c: r[c] for c in inner} for r in group], inner)
        source = str(root)
    fmt_name = {"jsonl": "json", "json_multiline": "json"}.get(fmt, fmt)
    sets = [f"data.format={fmt_name}"]
    if fmt == "json_multiline":
        sets.append("data.options.multiLine=true")
    if fmt == "text":
        sets.append("data.text_column=value")
    return source, sets

