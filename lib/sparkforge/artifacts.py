"""Run-directory bookkeeping: atomic JSON writes, sha256 of artifacts, the manifest.

``output.dir`` is a local or shared (NFS, DBFS fuse) path seen by the driver and by
rank 0 of training: artifacts are small files written there directly.

Every artifact a stage writes is recorded in ``manifest.json`` with its sha256
(:func:`update_manifest`, :func:`record_artifacts`); every stage that loads one checks
it first (:func:`verify_artifact`, :func:`read_verified_json`, :func:`read_verified_text`)
and refuses a file that changed with :class:`ArtifactError` (CLI exit code 2: a
tampered or half-copied run directory is the user's to fix, not a runtime crash).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkforge.config import ConfigError

# The run directory's names (re-exported here): sparkforge.rundir owns the layout.
from sparkforge.rundir import MANIFEST, TRAINING_CONFIG

if TYPE_CHECKING:
    from sparkforge.config import Config


# Which stage writes an artifact (by path prefix), for the fix in error messages.
_WRITERS = (("model/score_reference-", "score (delete the file: the next score run "
             "recomputes it)"), ("model/model.", "train"), ("model/history", "train"),
            ("model/", "preprocess"), ("compressed/", "compress"), ("scores/", "score"),
            ("eval_scores/", "score"))


class ArtifactError(ConfigError):
    """An artifact of the run directory is missing from the manifest or changed after it
    was written (CLI exit code 2, no traceback)."""


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write then rename: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def update_manifest(out_dir: Path, section: str, payload: dict[str, Any],
                    artifacts: list[Path] | None = None) -> dict[str, Any]:
    """Merge ``payload`` under ``section`` of ``out_dir/manifest.json``; record artifact hashes."""
    path = out_dir / MANIFEST
    with _locked(path):
        manifest: dict[str, Any] = read_json(path) if path.exists() else {}
        manifest[section] = payload
        hashes = manifest.setdefault("artifacts", {})
        for a in artifacts or []:
            hashes[str(a.relative_to(out_dir))] = {"sha256": sha256_file(a),
                                                  "bytes": a.stat().st_size}
        write_json_atomic(path, manifest)
    return manifest


def record_artifacts(out_dir: Path, artifacts: list[Path]) -> None:
    """Record the sha256 of ``artifacts`` in the manifest without touching any section."""
    path = out_dir / MANIFEST
    with _locked(path):
        manifest: dict[str, Any] = read_json(path) if path.exists() else {}
        hashes = manifest.setdefault("artifacts", {})
        for a in artifacts:
            hashes[str(a.relative_to(out_dir))] = {"sha256": sha256_file(a),
                                                  "bytes": a.stat().st_size}
        write_json_atomic(path, manifest)


def _writer(rel: str) -> str:
    return next((stage for prefix, stage in _WRITERS if rel.startswith(prefix)), "its stage")


def _check(out_dir: Path, artifact: Path, data: bytes | None) -> str:
    rel = artifact.relative_to(out_dir).as_posix()
    mpath = out_dir / MANIFEST
    if not mpath.exists():
        raise ArtifactError(f"{artifact}: {mpath} does not exist, so the file cannot be "
                            "checked; point output.dir at a run directory written by "
                            "sparkforge (the manifest records every artifact's sha256)")
    rec = read_json(mpath).get("artifacts", {}).get(rel)
    if rec is None:
        raise ArtifactError(f"{artifact} is not recorded in {mpath}; rerun "
                            f"`sparkforge {_writer(rel).split()[0]}` for this output.dir "
                            "instead of copying files into the run directory")
    if data is None and not artifact.is_file():
        raise ArtifactError(f"{artifact} is recorded in {mpath} but missing; restore it or "
                            f"rerun {_writer(rel)}")
    actual = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(artifact)
    if actual != rec["sha256"]:
        raise ArtifactError(f"{artifact} has sha256 {actual} but {mpath} recorded "
                            f"{rec['sha256']}: the file changed after it was written; restore "
                            f"it or rerun {_writer(rel)}")
    return actual


def verify_artifact(out_dir: Path, artifact: Path) -> str:
    """Check ``artifact`` against the sha256 the manifest recorded; return the hash.

    Raises :class:`ArtifactError` naming the file and the stage to rerun when it is not
    recorded, missing, or changed."""
    return _check(out_dir, artifact, None)


def read_verified_text(out_dir: Path, artifact: Path) -> str:
    """The text of ``artifact``, refused unless its bytes match the manifest's sha256
    (hashed from the same bytes that are returned: no window for a swap in between)."""
    try:
        data = artifact.read_bytes()
    except FileNotFoundError:
        _check(out_dir, artifact, None)  # raises: not recorded, or recorded but missing
        raise
    _check(out_dir, artifact, data)
    return data.decode("utf-8")


def read_verified_json(out_dir: Path, artifact: Path) -> Any:
    """The parsed JSON of ``artifact`` after :func:`read_verified_text`'s check."""
    return json.loads(read_verified_text(out_dir, artifact))


def save_training_config(cfg: Config) -> Path:
    """Write the resolved config to ``model/config.json`` (preprocess records it), so a
    later score or evaluate needs only the run directory and the new input."""
    path = cfg.out / TRAINING_CONFIG
    # Not the tracking section: scoring reads only the data sections back, and a scoring
    # machine without MLflow would refuse a training config that had tracking.mlflow on.
    write_json_atomic(path, {k: v for k, v in cfg.to_dict().items() if k != "tracking"})
    return path


# The sections of the training config that decide how a row is read and encoded.
_DATA_SECTIONS = ("task", "data", "preprocess", "tokenizer")


def scoring_config(cfg: Config) -> Config:
    """``cfg`` with the training's data settings when it has none (empty ``data.input``).

    score and evaluate read the run directory and the new input only: the task, the data
    settings (format, options, columns), the cleaning and tokenizer settings come from
    ``model/config.json`` (checked against the manifest). A config that states
    ``data.input`` keeps its own settings; a difference from training is logged."""
    import dataclasses
    import logging

    from sparkforge.config import load_config

    log = logging.getLogger(__name__)
    path = cfg.out / TRAINING_CONFIG
    if not path.exists():
        if not cfg.data.input:
            raise ConfigError(
                f"data.input='': output.dir={str(cfg.out)!r} has no {TRAINING_CONFIG} to take "
                "the training's data settings from (run `sparkforge preprocess` with this "
                "output.dir, or state the training's data.* settings in the config)")
        return cfg
    verify_artifact(cfg.out, path)
    trained = load_config(path)
    if cfg.data.input:
        differ = [f"data.{k}" for k in dataclasses.asdict(cfg.data)
                  if k != "input" and getattr(cfg.data, k) != getattr(trained.data, k)]
        differ += [k for k in ("task",) if getattr(cfg, k) != getattr(trained, k)]
        if differ:
            log.warning("the config's %s differ from the training's (%s); scoring uses the "
                        "config's. Leave data.input empty to use the training's settings",
                        differ, path)
        return cfg
    log.info("data settings taken from the training run (%s)", path)
    return dataclasses.replace(cfg, **{k: getattr(trained, k) for k in _DATA_SECTIONS})
