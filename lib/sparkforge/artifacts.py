"""Run-directory bookkeeping: atomic JSON writes, sha256 of artifacts, the manifest.

``output.dir`` is a local or shared (NFS, DBFS fuse) path seen by the driver and by
rank 0 of training: artifacts are small files written there directly.
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
from typing import Any

MANIFEST = "manifest.json"


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


def verify_artifact(out_dir: Path, artifact: Path) -> str:
    """Check ``artifact`` against the sha256 the manifest recorded; return the hash."""
    manifest = read_json(out_dir / MANIFEST)
    rel = str(artifact.relative_to(out_dir))
    rec = manifest.get("artifacts", {}).get(rel)
    if rec is None:
        raise RuntimeError(f"{artifact} is not recorded in {out_dir / MANIFEST}; rerun the stage "
                           "that writes it instead of copying files into the run directory")
    actual = sha256_file(artifact)
    if actual != rec["sha256"]:
        raise RuntimeError(f"{artifact} has sha256 {actual} but the manifest recorded "
                           f"{rec['sha256']}; the file changed after it was written, rerun "
                           "the stage that writes it")
    return actual
