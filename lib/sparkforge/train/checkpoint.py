"""Per-epoch checkpoints under ``model/checkpoint/``, written atomically by rank 0.

Layout: ``checkpoint/epoch-0003/{model.safetensors, state.pt}``. Rank 0 writes a
``.epoch-0003.tmp-<pid>`` folder, fsyncs it, and renames it into place: a folder named
``epoch-NNNN`` is therefore always complete, and a rank killed mid-write leaves only a
``.tmp`` folder that :func:`latest` ignores and the next write removes. Older epochs are
deleted after the new one is in place, so a complete checkpoint exists at every
moment.

``model.safetensors`` holds the full (unsharded) weights; ``state.pt`` the optimizer and
scheduler state, every rank's RNG state, the epoch, the early-stopping counters and the
history so far. It is loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

CHECKPOINT_DIR = "checkpoint"
WEIGHTS = "model.safetensors"
STATE = "state.pt"
_EPOCH_DIR = re.compile(r"^epoch-(\d+)$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def complete(root: Path) -> list[tuple[int, Path]]:
    """(epoch, folder) of every complete checkpoint under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _EPOCH_DIR.match(p.name)
        if m and (p / WEIGHTS).is_file() and (p / STATE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest(root: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    found = complete(root)
    return found[-1][1] if found else None


def save(root: Path, epoch: int, weights: dict[str, Any], state: dict[str, Any]) -> Path:
    """Write epoch ``epoch``'s checkpoint (rank 0 only) and drop older ones."""
    import torch
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".epoch-*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"epoch-{epoch:04d}"
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp / WEIGHTS))
    torch.save(state, tmp / STATE)
    for f in (tmp / WEIGHTS, tmp / STATE):
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():  # a rerun of the same epoch
        shutil.rmtree(final)
    tmp.rename(final)
    _fsync_dir(root)
    for e, p in complete(root):
        if e < epoch:
            shutil.rmtree(p, ignore_errors=True)
    return final


def load(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(weights, state) of one checkpoint folder, on CPU."""
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(folder / WEIGHTS), device="cpu")
    state = torch.load(folder / STATE, weights_only=True, map_location="cpu")
    return weights, state


def clear(root: Path) -> None:
    """Remove every checkpoint (a fresh run must not resume from an older one)."""
    shutil.rmtree(root, ignore_errors=True)
