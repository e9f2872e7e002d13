"""Scheduled-run bookkeeping: where a scoring run is written, its lock, staging and publish.

Two kinds of scoring run share one layout under ``output.dir``:

- the pipeline's **evaluation run** (no ``score.input`` and no ``run.date``): the training
  input scored once, read by ``evaluate`` for ``metrics.json`` -> ``eval_scores/``;
- **dated runs** (``score.input`` or ``run.date`` set, e.g. nightly) ->
  ``scores/run_date=YYYY-MM-DD/``, one Hive-style partition per date, so ``scores/`` reads
  as one table with a ``run_date`` column.

Keeping them apart means a nightly run for today never replaces the scores the pipeline's
metrics were computed from.

A run holds ``<parent>/_locks/<name>.lock`` (pid, host, start time; an ``flock`` on it, so
a run killed with SIGKILL releases it), stages its output under ``<parent>/_staging/`` and
publishes it with a directory rename. The next run of the same target removes what a
crashed one left there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sparkforge.artifacts import (
    ArtifactError,
    read_json,
    read_verified_json,
    read_verified_text,
    verify_artifact,
)
from sparkforge.config import Config, ConfigError
from sparkforge.rundir import (
    EVAL_SCORES,
    EVALUATIONS,
    LOCKS,
    MANIFEST,
    QUARANTINE,
    RUN_MANIFEST,
    SCORES,
    SELECTION,
    STAGING,
    published_dates,
)

log = logging.getLogger(__name__)

# The names (RUN_MANIFEST, SCORES, ...) are the run directory's (sparkforge.rundir),
# re-exported here for the callers that import them from this module.
__all__ = ["EVALUATIONS", "EVAL_SCORES", "LOCKS", "RUN_MANIFEST", "SCORES", "SELECTION",
           "STAGING", "RunLockedError", "RunTarget", "VariantModel", "clean_leftovers",
           "evaluate_target", "is_dated", "publish", "published_dates", "read_selection",
           "run_lock", "score_target", "staging_dirs", "variant_model", "verified_variants"]


class RunLockedError(ConfigError):
    """Another run is writing the same target (CLI exit code 2, no traceback)."""


@dataclass(frozen=True)
class RunTarget:
    """Where one scoring run writes (and ``evaluate`` reads)."""

    name: str             # "eval_scores" or "run_date=YYYY-MM-DD"
    final: Path           # the published Parquet folder
    quarantine: Path      # its quarantined rows
    dated: bool
    run_date: str

    @property
    def staging_root(self) -> Path:
        return self.final.parent / STAGING

    @property
    def lock(self) -> Path:
        return self.final.parent / LOCKS / f"{self.name}.lock"

    @property
    def manifest_section(self) -> str:
        return "scheduled_score" if self.dated else "score"

    def evaluation_dir(self, out: Path) -> Path:
        """Where ``evaluate`` writes metrics.json and report.html for this run."""
        return out / EVALUATIONS / self.name if self.dated else out


def is_dated(cfg: Config) -> bool:
    return bool(cfg.score.input or cfg.run.date)


def score_target(cfg: Config) -> RunTarget:
    """The target ``score`` writes for ``cfg``."""
    out, date = cfg.out, cfg.run.run_date
    if is_dated(cfg):
        name = f"run_date={date}"
        return RunTarget(name, out / SCORES / name, out / QUARANTINE / "score" / name,
                         True, date)
    return RunTarget(EVAL_SCORES, out / EVAL_SCORES, out / QUARANTINE / EVAL_SCORES,
                     False, date)


def evaluate_target(cfg: Config) -> RunTarget:
    """The run ``evaluate`` reads: ``run.date``'s; else the latest dated run when the
    config names a table to score; else the pipeline's evaluation run."""
    out = cfg.out
    if not is_dated(cfg):
        t = score_target(cfg)
        if not (t.final / "_SUCCESS").exists():
            raise ConfigError(f"output.dir={str(out)!r}: no published {EVAL_SCORES}/; run "
                              "`sparkforge score` with this config first (or set run.date "
                              "to evaluate a dated run)")
        return t
    dates = published_dates(out / SCORES)
    date = cfg.run.date or (dates[-1] if dates else "")
    if date not in dates:
        raise ConfigError(f"run.date={date!r}: no published {SCORES}/run_date={date}/ "
                          f"(published: {dates or 'none'}); run `sparkforge score` first")
    name = f"run_date={date}"
    return RunTarget(name, out / SCORES / name, out / QUARANTINE / "score" / name, True, date)


def read_selection(out: Path) -> dict[str, Any]:
    """``compressed/selection.json``, checked against the manifest.

    Checked by its sha256 when compress recorded it; otherwise against the manifest's
    ``compress`` section, which compress writes with the same content."""
    path = out / SELECTION
    if not path.exists():
        raise ConfigError(f"output.dir={str(out)!r}: no {SELECTION}; run `sparkforge compress` "
                          "with this config first")
    manifest = read_json(out / MANIFEST) if (out / MANIFEST).exists() else {}
    if SELECTION in manifest.get("artifacts", {}):
        selection: dict[str, Any] = read_verified_json(out, path)
        return selection
    selection = read_json(path)
    # Compared as canonical JSON: NaN figures (a failed measurement) equal themselves there.
    if _canonical(selection) != _canonical(manifest.get("compress")):
        raise ArtifactError(f"{path} differs from the compress section of {out / MANIFEST}: "
                            "the file changed after compress wrote it; restore it or rerun "
                            "`sparkforge compress`")
    return selection


def _canonical(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, default=str)


def verified_variants(out: Path, selection: dict[str, Any]) -> dict[str, str]:
    """sha256 of each selected ONNX file, each checked against the manifest."""
    return {v: verify_artifact(out, out / rel) for v, rel in selection["paths"].items()}


@dataclass(frozen=True)
class VariantModel:
    """The file a variant is scored from and the backend that runs it (a key of
    ``sparkforge.infer.predictor.BACKENDS``), checked against the manifest."""

    path: Path
    sha256: str
    format: str         # "onnx" | "torch"
    spec: str           # torch: the model spec's JSON text; onnx: ""
    why: str            # for the log: why this backend

    @property
    def backend(self) -> str:
        """The ``score.backend`` value that names this runtime."""
        return "onnxruntime" if self.format == "onnx" else self.format


def variant_model(out: Path, selection: dict[str, Any], variant: str, onnx_sha256: str,
                  backend: str) -> VariantModel:
    """How ``variant`` is scored under ``score.backend=backend``: the one place the model
    format is chosen. onnxruntime: its ONNX file (``onnx_sha256``, already verified).
    torch: the torch form compress recorded for it in ``selection["torch"]`` (weights and
    spec verified against the manifest here), or its ONNX file with the reason it has
    none (int8 and fp16 graphs, the scikit-learn baseline, a pruned architecture no spec
    states; or a run directory compressed before torch forms were saved)."""
    onnx = VariantModel(out / selection["paths"][variant], onnx_sha256, "onnx", "",
                        f"score.backend={backend}")
    if backend != "torch":
        return onnx
    entry = selection.get("torch", {}).get(variant)
    if entry is None:
        return replace(onnx, why="compress recorded no torch form (a run compressed "
                       "before score.backend existed: rerun compress)")
    if "weights" not in entry:
        return replace(onnx, why=f"no torch form: {entry.get('reason')}")
    weights = out / entry["weights"]
    return VariantModel(weights, verify_artifact(out, weights), "torch",
                        read_verified_text(out, out / entry["spec"]), "score.backend=torch")


# ---------------------------------------------------------------------------
# The lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict[str, Any]) -> str:
    return (f"pid {holder.get('pid')} on host {holder.get('host')}, started "
            f"{holder.get('started_at')}")


@contextlib.contextmanager
def run_lock(target: RunTarget) -> Iterator[dict[str, Any]]:
    """Hold ``target``'s lock for the run; refuse with :class:`RunLockedError` naming the
    run that holds it. A lock left by a dead process is taken over (the kernel drops
    the ``flock`` of a dead process; where ``flock`` is unsupported, the recorded pid is
    checked when it ran on this host)."""
    path = target.lock
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started_at": dt.datetime.now(dt.UTC).isoformat(), "target": target.name}
    for _ in range(5):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"{target.final} is being written by another run ({_describe(holder)}; lock "
                f"file {path}); wait for it to finish. Only one run per date") from None
        except OSError as e:  # no flock on this filesystem: fall back to the recorded pid
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise
            holder = _read_holder(fd)
            if holder and (holder.get("host") != me["host"] or _alive(int(holder["pid"]))):
                os.close(fd)
                raise RunLockedError(
                    f"{target.final} is being written by another run ({_describe(holder)}; "
                    f"lock file {path}); wait for it to finish, or delete the lock file if "
                    "that run is gone") from None
        # The file may have been removed by its previous holder between our open and flock.
        try:
            same = os.fstat(fd).st_ino == path.stat().st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        stale = _read_holder(fd)
        if stale:
            log.warning("taking over the lock %s of a run that is gone (%s)", path,
                        _describe(stale))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        try:
            yield me
        finally:
            path.unlink(missing_ok=True)
            os.close(fd)
        return
    raise RunLockedError(f"could not take the lock {path}: it keeps changing hands; retry")


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        holder: dict[str, Any] = json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder


# ---------------------------------------------------------------------------
# Staging and publishing


def staging_dirs(target: RunTarget) -> tuple[Path, Path]:
    """Fresh staging folders for the scores and the quarantined rows."""
    tag = uuid.uuid4().hex[:8]
    return (target.staging_root / f"{target.name}.{tag}",
            target.staging_root / f"quarantine-{target.name}.{tag}")


def clean_leftovers(target: RunTarget) -> list[str]:
    """Remove what a crashed run of ``target`` left (call with its lock held): staging
    folders, and the previous partition moved aside by an interrupted publish (put back
    when the new one never arrived). Returns what was done, for the log."""
    done: list[str] = []
    root = target.staging_root
    for prefix in (f"{target.name}.", f"quarantine-{target.name}."):
        for p in sorted(root.glob(f"{prefix}*")) if root.exists() else []:
            shutil.rmtree(p, ignore_errors=True)
            done.append(f"removed {p}")
    for final in (target.final, target.quarantine):
        olds = (sorted(final.parent.glob(f".{final.name}.old-*"), key=lambda p: p.stat().st_mtime)
                if final.parent.exists() else [])
        if olds and not final.exists():
            olds[-1].rename(final)
            done.append(f"restored {final} from {olds[-1].name}")
            olds = olds[:-1]
        for p in olds:
            shutil.rmtree(p, ignore_errors=True)
            done.append(f"removed {p}")
    if done:
        log.warning("cleaned up after an interrupted run of %s: %s", target.name, done)
    return done


def publish(staging: Path, final: Path) -> None:
    """Swap ``staging`` in as ``final``: the old partition is moved aside first and only
    deleted once the new one is in place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        final.rename(old)
    try:
        staging.rename(final)
    except BaseException:
        if old.exists() and not final.exists():
            old.rename(final)
        raise
    shutil.rmtree(old, ignore_errors=True)
