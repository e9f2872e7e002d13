"""Quality on public data sets: the generic configs, unchanged, against scikit-learn.

    .venv/bin/python -m benchmarks.bench_quality                 # all sets (~30 min, 2 cores)
    .venv/bin/python -m benchmarks.bench_quality --only digits --quick --rows-cap 500

Each set of ``benchmarks/quality_data.py`` is written once as a CSV under
``data/quality/`` (from files shipped in pinned PyPI packages: nothing is downloaded),
then ``python -m sparkforge pipeline`` runs on it with ``conf/text_classification.yaml``
or ``conf/tabular_classification.yaml`` (``--set task=tabular_regression`` for
regression). Only ``data.input``, the label and text column names, ``task`` and
``output.dir`` are set: no per-set tuning. ``--quick`` adds ``train.epochs=1``.

Read back from each run: ``metrics.json`` (the selected variant's test metrics, and its
``baseline`` entry when there is one) and ``manifest.json`` (rows, the training history:
the kept epoch). The benchmark also fits its own scikit-learn baseline on the run's own
``preprocessed/`` train split and scores the test split (the same rows the pipeline is
judged on): TF-IDF (1-2 grams) + LogisticRegression for text, LogisticRegression on the
encoded features (standardized numerics + one-hot categories) for tabular
classification, Ridge for regression.

Acceptance per set: the selected variant's test accuracy within 1 point of the better
baseline's (regression: R2 within 0.02), or the selected variant is the baseline itself.

A full run (no ``--only``, ``--rows-cap`` or ``--quick``) rewrites the "Quality on public
data sets" section of BENCHMARKS.md; every run writes ``runs/quality/results.json`` and
``runs/quality/results.md``. Optional fields are read defensively: runs without a
``baseline`` entry, a kept epoch or a history still give a row.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._common import machine, write_section
from benchmarks.quality_data import DATASETS, DataSet, write_csv

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "## Quality on public data sets"
DATA_DIR = ROOT / "data" / "quality"
RUNS_DIR = ROOT / "runs" / "quality"
CONFIGS = {"text_classification": "conf/text_classification.yaml",
           "tabular_classification": "conf/tabular_classification.yaml",
           "tabular_regression": "conf/tabular_classification.yaml"}
ACC_TOLERANCE = 0.01  # accuracy: within 1 point of the better baseline
R2_TOLERANCE = 0.02
QUICK_EPOCHS = 1
RUN_TIMEOUT_S = 30 * 60  # one pipeline run; a hung run is killed and reported

log = logging.getLogger("bench_quality")


# --- data ---------------------------------------------------------------------------------

def csv_for(ds: DataSet, rows_cap: int | None) -> tuple[Path, dict[str, Any]]:
    """The cached CSV of ``ds`` (written on first use) and its description."""
    cap = min(c for c in (ds.cap, rows_cap) if c is not None) if (ds.cap or rows_cap) else None
    stem = ds.name if cap is None else f"{ds.name}-cap{cap}"
    path, meta_path = DATA_DIR / f"{stem}.csv", DATA_DIR / f"{stem}.json"
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("source") == ds.source:
            return path, meta
    t0 = time.perf_counter()
    rows, header = write_csv(ds, path, cap)
    meta = {"rows": rows, "columns": len(header), "header": header, "cap": cap,
            "source": ds.source}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    log.info("wrote %s: %d rows, %d columns (%.1f s)", path, rows, len(header),
             time.perf_counter() - t0)
    return path, meta


# --- the pipeline -------------------------------------------------------------------------

def pipeline_command(ds: DataSet, csv: Path, out: Path, quick: bool) -> list[str]:
    sets = [f"data.input={csv}", f"data.label_column={ds.label}", f"output.dir={out}"]
    if ds.text:
        sets.append(f"data.text_column={ds.text}")
    if ds.task == "tabular_regression":
        sets.append("task=tabular_regression")
    if quick:
        sets.append(f"train.epochs={QUICK_EPOCHS}")
    cmd = [sys.executable, "-m", "sparkforge", "pipeline", "--config", CONFIGS[ds.task]]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def run_pipeline(cmd: list[str], logfile: Path, timeout: float) -> tuple[int, float]:
    """Run ``cmd`` from the repo root with this checkout's ``lib`` first on the path;
    returns (exit code, wall seconds). Output goes to ``logfile``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "lib"), env.get("PYTHONPATH"))
                                        if p)
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(logfile, "w") as fh:
        # Own process group: a run past its timeout is ended with its JVM and workers.
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            rc = 124
    return rc, time.perf_counter() - t0


# --- reading a run ------------------------------------------------------------------------

def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def kept_epoch(train: dict[str, Any]) -> tuple[int | None, int | None]:
    """(the epoch whose weights were kept, epochs run) from the manifest's train section.

    An explicit ``kept_epoch``/``best_epoch`` wins; otherwise the first epoch with the
    best validation metric (the loop saves weights on strict improvement)."""
    history = [h for h in train.get("history") or [] if isinstance(h, dict)]
    run = train.get("epochs_run", len(history) or None)
    for key in ("kept_epoch", "best_epoch", "selected_epoch"):
        if isinstance(train.get(key), int):
            return train[key], run
    best, epoch = -math.inf, None
    for h in history:
        m = h.get("val_metric")
        if isinstance(m, (int, float)) and not math.isnan(m) and m > best:
            best, epoch = m, h.get("epoch")
    return epoch, run


def metrics_baselines(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The baseline figures a run recorded itself: ``metrics["baseline"]`` (one entry, or
    several by name) and any variant whose name says it is a baseline."""
    found: dict[str, dict[str, Any]] = {}
    b = metrics.get("baseline")
    if isinstance(b, dict) and any(isinstance(v, (int, float)) for v in b.values()):
        found[f"run: {b.get('model', 'baseline')}"] = b
    elif isinstance(b, dict):
        found.update({f"run: {k}": v for k, v in b.items() if isinstance(v, dict)})
    elif isinstance(b, list):
        found.update({f"run: {v.get('model', i)}": v for i, v in enumerate(b)
                      if isinstance(v, dict)})
    for name, v in (metrics.get("variants") or {}).items():
        if "baseline" in name and isinstance(v, dict):
            found[f"run: {name}"] = v
    return found


# --- the benchmark's own baseline ---------------------------------------------------------

def _split(pre: Path, split: str, columns: list[str]) -> Any:
    import pyarrow.dataset as pads

    dset = pads.dataset(str(pre), format="parquet", partitioning="hive")
    return dset.to_table(columns=columns, filter=pads.field("split") == split)


def sklearn_baseline(pre: Path, task: str) -> dict[str, Any]:
    """Fit on ``pre``'s train split, score its test split (see the module doc)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import accuracy_score, f1_score, log_loss, mean_squared_error, r2_score

    text = task == "text_classification"
    import pyarrow.dataset as pads

    from sparkforge import features

    x_cols = ["text"] if text else features.source_columns(
        ["features"], pads.dataset(str(pre), format="parquet", partitioning="hive").schema.names)
    tr, te = (_split(pre, s, [*x_cols, "label"]) for s in ("train", "test"))
    ytr, yte = tr.column("label").to_pylist(), te.column("label").to_pylist()
    if text:
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        xtr = vec.fit_transform(tr.column("text").to_pylist())
        xte = vec.transform(te.column("text").to_pylist())
        name = "tfidf_logreg"
    else:
        def dense(t: Any) -> Any:
            cols = {c: (np.stack(t.column(c).to_numpy(zero_copy_only=False))
                        if c != features.DIM else t.column(c).to_numpy()) for c in x_cols}
            return np.asarray(features.densify(cols)["features"], dtype=np.float64)
        xtr, xte = dense(tr), dense(te)
        name = "ridge" if task == "tabular_regression" else "onehot_logreg"
    out: dict[str, Any] = {"model": name, "n_train": len(ytr), "n_rows": len(yte)}
    if task == "tabular_regression":
        pred = Ridge(alpha=1.0).fit(xtr, ytr).predict(xte)
        out.update(r2=float(r2_score(yte, pred)),
                   rmse=float(np.sqrt(mean_squared_error(yte, pred))))
        return out
    clf = LogisticRegression(max_iter=2000, C=4.0 if text else 1.0).fit(xtr, ytr)
    proba = clf.predict_proba(xte)
    pred = clf.classes_[proba.argmax(axis=1)]
    out.update(accuracy=float(accuracy_score(yte, pred)),
               f1_macro=float(f1_score(yte, pred, average="macro")),
               log_loss=float(log_loss(yte, proba, labels=clf.classes_)))
    return out


# --- one data set -------------------------------------------------------------------------

def acceptance(task: str, selected: str | None, sel: dict[str, Any],
               baselines: dict[str, dict[str, Any]]) -> tuple[bool | None, str]:
    """(holds, why): the selected variant within tolerance of the better baseline."""
    if selected is not None and "baseline" in selected:
        return True, "the baseline itself is selected"
    key, tol = ("r2", R2_TOLERANCE) if task == "tabular_regression" else \
        ("accuracy", ACC_TOLERANCE)
    scored = {n: b[key] for n, b in baselines.items() if isinstance(b.get(key), (int, float))}
    if not isinstance(sel.get(key), (int, float)) or not scored:
        return None, f"no {key} to compare"
    best = max(scored, key=lambda n: scored[n])
    gap = sel[key] - scored[best]
    return gap >= -tol, f"{key} {gap:+.4f} vs {best} (tolerance {tol})"


def bench_one(ds: DataSet, rows_cap: int | None, quick: bool) -> dict[str, Any]:
    csv, meta = csv_for(ds, rows_cap)
    out = RUNS_DIR / ds.name
    shutil.rmtree(out, ignore_errors=True)  # a failed run must not show an older run's files
    cmd = pipeline_command(ds, csv.relative_to(ROOT), out.relative_to(ROOT), quick)
    log.info("%s: %s", ds.name, " ".join(cmd[1:]))
    rc, wall = run_pipeline(cmd, RUNS_DIR / f"{ds.name}.log", RUN_TIMEOUT_S)
    res: dict[str, Any] = {"name": ds.name, "task": ds.task, "source": ds.source,
                           "note": ds.note, "rows": meta["rows"], "columns": meta["columns"],
                           "cap": meta.get("cap"), "exit_code": rc, "wall_s": wall,
                           "command": " ".join(["python", *cmd[1:]])}
    if rc != 0:
        tail = (RUNS_DIR / f"{ds.name}.log").read_text(errors="replace").splitlines()[-15:]
        res["error"] = "\n".join(tail)
        log.error("%s: pipeline exit code %d\n%s", ds.name, rc, res["error"])
    metrics, manifest = _read(out / "metrics.json"), _read(out / "manifest.json")
    selected = metrics.get("selected")
    variants = metrics.get("variants") or {}
    res["selected"] = selected
    res["selected_metrics"] = variants.get(selected, {}) if selected else {}
    train = manifest.get("train") if isinstance(manifest.get("train"), dict) else {}
    res["kept_epoch"], res["epochs_run"] = kept_epoch(train or {})
    pre = manifest.get("preprocess") if isinstance(manifest.get("preprocess"), dict) else {}
    res["preprocess"] = {k: v for k, v in (pre or {}).items()
                         if k in ("rows_in", "rows_kept", "rows_quarantined", "rows_per_split",
                                  "quarantine_reasons")}
    baselines = metrics_baselines(metrics)
    if (out / "preprocessed").exists():
        try:
            baselines["bench: " + ("ridge" if ds.task == "tabular_regression" else
                                   "tfidf_logreg" if ds.text else "onehot_logreg")] = \
                sklearn_baseline(out / "preprocessed", ds.task)
        except Exception as e:  # a baseline that fails is reported, not fatal
            log.exception("%s: baseline failed", ds.name)
            res["baseline_error"] = f"{type(e).__name__}: {e}"
    res["baselines"] = baselines
    res["accepted"], res["acceptance"] = acceptance(ds.task, selected,
                                                    res["selected_metrics"], baselines)
    log.info("%s: %.0f s, selected %s %s; acceptance %s (%s)", ds.name, wall, selected,
             {k: v for k, v in res["selected_metrics"].items()
              if k in ("accuracy", "f1_macro", "log_loss", "r2", "rmse")},
             res["accepted"], res["acceptance"])
    return res


# --- the table ----------------------------------------------------------------------------

def _f(v: Any, nd: int = 4) -> str:
    return f"{v:.{nd}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def _best(res: dict[str, Any], key: str) -> tuple[str, dict[str, Any]]:
    scored = {n: b for n, b in res["baselines"].items() if isinstance(b.get(key), (int, float))}
    if not scored:
        return "-", {}
    name = max(scored, key=lambda n: scored[n][key])
    return name, scored[name]


def table(results: list[dict[str, Any]]) -> str:
    def verdict(r: dict[str, Any]) -> str:
        if r["exit_code"] != 0:
            return f"**failed** (exit {r['exit_code']})"
        return {True: "yes", False: "**no**", None: "n/a"}[r["accepted"]] + \
            f" ({r['acceptance']})"

    def epoch(r: dict[str, Any]) -> str:
        k, n = r.get("kept_epoch"), r.get("epochs_run")
        return f"{k} of {n}" if k is not None else (f"? of {n}" if n else "-")

    lines = []
    cls = [r for r in results if r["task"] != "tabular_regression"]
    reg = [r for r in results if r["task"] == "tabular_regression"]
    if cls:
        lines += ["| data set | rows | task | classes | selected | accuracy | macro F1 | "
                  "log loss | best baseline | its accuracy | its macro F1 | its log loss | "
                  "kept epoch (0-based) | wall s | accepted |",
                  "|---|---:|---|---:|---|---:|---:|---:|---|---:|---:|---:|---|---:|---|"]
        for r in cls:
            m = r["selected_metrics"]
            labels = m.get("labels")
            bname, b = _best(r, "accuracy")
            lines.append(
                f"| {r['name']} | {r['rows']:,} | {r['task'].split('_')[0]} | "
                f"{len(labels) if isinstance(labels, list) else '-'} | "
                f"{r.get('selected') or '-'} | {_f(m.get('accuracy'))} | "
                f"{_f(m.get('f1_macro'))} | {_f(m.get('log_loss'))} | {bname} | "
                f"{_f(b.get('accuracy'))} | {_f(b.get('f1_macro'))} | {_f(b.get('log_loss'))} | "
                f"{epoch(r)} | {r['wall_s']:.0f} | {verdict(r)} |")
    if reg:
        lines += ["", "| data set | rows | selected | R2 | RMSE | best baseline | its R2 | "
                  "its RMSE | kept epoch (0-based) | wall s | accepted |",
                  "|---|---:|---|---:|---:|---|---:|---:|---|---:|---|"]
        for r in reg:
            m = r["selected_metrics"]
            bname, b = _best(r, "r2")
            lines.append(
                f"| {r['name']} | {r['rows']:,} | {r.get('selected') or '-'} | "
                f"{_f(m.get('r2'))} | {_f(m.get('rmse'), 2)} | {bname} | {_f(b.get('r2'))} | "
                f"{_f(b.get('rmse'), 2)} | {epoch(r)} | {r['wall_s']:.0f} | {verdict(r)} |")
    return "\n".join(lines).lstrip("\n")


def sets_table(results: list[dict[str, Any]]) -> str:
    lines = ["| data set | source (package: file) | rows | columns | task | what |",
             "|---|---|---:|---:|---|---|"]
    for r in results:
        cap = f" (seeded sample, cap {r['cap']:,})" if r.get("cap") else ""
        lines.append(f"| {r['name']} | {r['source']} | {r['rows']:,}{cap} | {r['columns']} | "
                     f"{r['task']} | {r['note']} |")
    return "\n".join(lines)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def section(results: list[dict[str, Any]], argv: list[str], total_s: float) -> str:
    m = machine()
    held = sum(1 for r in results if r["accepted"] is True)
    return "\n".join([
        SECTION, "",
        f"Goal (issue 9): with the generic configs unchanged, the selected variant's test "
        f"accuracy within {ACC_TOLERANCE * 100:.0f} point of the better scikit-learn "
        f"baseline's (regression: R2 within {R2_TOLERANCE}), or the baseline itself. "
        f"**Result: {held} of {len(results)} sets.**", "",
        "```bash", "make bench-quality   # = " + " ".join(
            [".venv/bin/python -m benchmarks.bench_quality", *argv]), "```", "",
        f"- {dt.date.today().isoformat()}, commit {git_commit()}; machine: nproc "
        f"{m['nproc']}, {m['cpu']}, {m['ram']} RAM, Python {m['python']}; "
        f"total wall time {total_s / 60:.1f} min (other jobs shared the machine)",
        "- Each set runs `python -m sparkforge pipeline` with `conf/text_classification.yaml` "
        "or `conf/tabular_classification.yaml` (`task=tabular_regression` for regression), "
        "setting only `data.input`, the label/text columns, `task` and `output.dir`.",
        "- Metrics on the pipeline's own test split. Baselines on the same split: `run:` "
        "entries come from the run's `metrics.json`; `bench:` ones are fitted here on the "
        "run's `preprocessed/` train split (TF-IDF 1-2 grams + LogisticRegression for text, "
        "LogisticRegression on the encoded features for tabular classification, Ridge for "
        "regression). Kept epoch: the epoch whose weights the run kept (from the manifest; "
        "else the best validation epoch of its history), 0-based, of the epochs run. "
        "Wall s: the whole pipeline (preprocess, train, compress, score, evaluate).", "",
        table(results), "",
        "Data sets (`benchmarks/quality_data.py`; CSVs cached under `data/quality/`):", "",
        sets_table(results), ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help=f"run only these sets (repeatable, or comma-separated): "
                        f"{', '.join(DATASETS)}")
    p.add_argument("--rows-cap", type=int, default=None, metavar="N",
                   help="at most N rows per set (a seeded sample), for quick trials")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: train.epochs={QUICK_EPOCHS}")
    p.add_argument("--no-md", action="store_true", help="do not touch BENCHMARKS.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    names = [n for o in args.only for n in o.split(",") if n] or list(DATASETS)
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        p.error(f"unknown data set(s) {unknown}; choose from {', '.join(DATASETS)}")
    if args.rows_cap is not None and args.rows_cap < 10:
        p.error(f"--rows-cap={args.rows_cap}: use at least 10 rows")
    t0 = time.perf_counter()
    results = []
    for n in names:
        results.append(bench_one(DATASETS[n], args.rows_cap, args.quick))
        # Written after each set: a long run that is stopped keeps what it measured.
        RUNS_DIR.mkdir(parents=True, exist_ok=True)
        (RUNS_DIR / "results.json").write_text(json.dumps(results, indent=2, default=str))
    total = time.perf_counter() - t0
    text = section(results, argv if argv is not None else sys.argv[1:], total)
    (RUNS_DIR / "results.md").write_text(text)
    print(text)
    full = not (args.only or args.rows_cap or args.quick)
    if full and not args.no_md:
        write_section(BENCHMARKS_MD, SECTION, text)
        log.info("wrote the %r section of %s", SECTION, BENCHMARKS_MD)
    return 0 if all(r["exit_code"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
