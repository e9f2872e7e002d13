"""Test hooks of the training core: the one injection point, kept out of production APIs.

Tests (and the cluster fault tests) install a :class:`TrainHooks` on the driver::

    from sparkforge.train import hooks

    with hooks.installed(hooks.TrainHooks(fail_at=hooks.FailAt(rank=1, epoch=1, step=2))):
        run_train(spark, cfg)

:func:`sparkforge.train.launch.launch` ships the installed hooks to every rank beside
the :class:`~sparkforge.train.spec.TrainSpec` (an environment variable would not reach
barrier tasks on executors started before it was set) and installs them there; the
training loop asks :func:`active` at its two hook sites. With nothing installed (every
production run) both sites do nothing.

- ``fail_at``: kill rank ``rank`` at ``(epoch, step)`` (``raise_``: raise
  :class:`InjectedFailure` instead, for in-process tests; ``once_file``: only the first
  time, so a relaunch goes on).
- ``trace_dir``: every rank records the ``trace_column`` values (ids) it trained on, per
  epoch, in ``epoch{E}-rank{R}.json`` (``ids``, ``pad_rows``, ``steps``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_ACTIVE: TrainHooks | None = None


class InjectedFailure(RuntimeError):
    """Raised at ``fail_at`` when it is told not to kill the process."""


@dataclass(frozen=True)
class FailAt:
    """Where a rank fails: rank ``rank`` before micro-batch ``step`` of ``epoch``."""

    rank: int
    epoch: int
    step: int
    raise_: bool = False  # raise InjectedFailure instead of os._exit(1)
    once_file: str | None = None  # fail only while this file does not exist yet


@dataclass(frozen=True)
class TrainHooks:
    """Test-only behaviour of the training ranks (see the module docstring)."""

    fail_at: FailAt | None = None
    trace_dir: str | None = None
    trace_column: str = "id"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrainHooks:
        raw: dict[str, Any] = json.loads(text) if text else {}
        fail = raw.pop("fail_at", None)
        return cls(fail_at=FailAt(**fail) if fail else None, **raw)

    def trace_columns(self) -> list[str]:
        """The extra column the loader must read for tracing ([] when not tracing)."""
        return [self.trace_column] if self.trace_dir else []


def active() -> TrainHooks | None:
    """The hooks installed in this process, or None (always None in production)."""
    return _ACTIVE


@contextlib.contextmanager
def installed(hooks: TrainHooks | None) -> Iterator[None]:
    """Install ``hooks`` for the block (None: none); the previous ones come back after."""
    global _ACTIVE
    before, _ACTIVE = _ACTIVE, hooks
    try:
        yield
    finally:
        _ACTIVE = before


def maybe_fail(rank: int, epoch: int, step: int) -> None:
    """The ``fail_at`` site, called before every training micro-batch."""
    at = _ACTIVE.fail_at if _ACTIVE else None
    if at is None or (rank, epoch, step) != (at.rank, at.epoch, at.step):
        return
    if at.once_file:  # fail only the first attempt (a relaunched stage goes on)
        marker = Path(at.once_file)
        if marker.exists():
            return
        marker.write_text("failed once")
    print(f"[sparkforge] rank {rank}: injected failure at epoch {epoch} step {step}",
          flush=True)
    if at.raise_:
        raise InjectedFailure(f"rank {rank} epoch {epoch} step {step}")
    os._exit(1)


class Tracer:
    """The ``trace_dir`` site: collects one rank's trained rows per epoch."""

    def __init__(self, hooks: TrainHooks | None, rank: int) -> None:
        self.dir = Path(hooks.trace_dir) if hooks and hooks.trace_dir else None
        self.column = hooks.trace_column if hooks else "id"
        self.rank = rank
        self.ids: list[Any] = []
        self.pad_rows = 0

    def batch(self, raw: dict[str, Any], pad_key: str) -> None:
        if self.dir is not None:
            self.ids.extend(raw[self.column].tolist())
            self.pad_rows += int(raw[pad_key].sum()) if pad_key in raw else 0

    def epoch_end(self, epoch: int, steps: int) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / f"epoch{epoch}-rank{self.rank}.json").write_text(
            json.dumps({"ids": self.ids, "pad_rows": self.pad_rows, "steps": steps}))
        self.ids, self.pad_rows = [], 0
