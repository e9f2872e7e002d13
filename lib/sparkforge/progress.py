"""Live progress: stage tags on Spark jobs, quiet third-party loggers, training progress.

* :func:`stage_tag` names the stage on every Spark job started inside it, so the Spark UI
  (and ``spark.interruptTag``) can tell the pipeline's stages apart, on classic Spark and
  over Spark Connect alike.
* :func:`quiet_third_party` keeps chatty libraries (onnx_ir logs a line per initializer,
  onnxscript one per folded constant) at WARNING unless ``--verbose``.
* :class:`ProgressReporter` turns a training loop's steps into a line every 30 s (or every
  N steps): epoch, step/total, samples/s, loss, ETA. Pure Python, no torch.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

TAG_PREFIX = "sparkforge-"
# Loggers that are INFO-chatty in a normal run; their warnings and errors still show.
THIRD_PARTY_LOGGERS = ("py4j", "matplotlib", "PIL", "onnx_ir", "onnxscript", "onnx",
                       "onnxruntime", "torch.onnx", "mlflow", "urllib3", "git")


def stage_tag_name(stage: str) -> str:
    """The Spark job tag of ``stage`` (tags may not contain commas)."""
    return TAG_PREFIX + stage.replace(",", "_")


@contextlib.contextmanager
def stage_tag(spark: Any, stage: str) -> Iterator[str]:
    """Tag the Spark jobs started inside the block with ``sparkforge-<stage>``.

    ``spark.addTag`` works on classic Spark and over Spark Connect (where a SparkContext,
    and so ``setJobDescription``, does not exist); on classic Spark the job description
    is set too, which the Spark UI's jobs table shows. ``setJobGroup`` is avoided on
    purpose: Databricks notebooks use the job group to cancel a cell's jobs. Tags and
    description are restored on the way out, whatever the block raised."""
    tag = stage_tag_name(stage)
    tagged = False
    add = getattr(spark, "addTag", None)
    if callable(add):
        try:
            add(tag)
            tagged = True
        except Exception as e:  # an older or restricted session: untagged, not failed
            log.debug("spark.addTag(%r) failed: %s", tag, e)
    sc = None
    try:  # classic only: Spark Connect raises on sparkContext
        sc = spark.sparkContext
        previous = sc.getLocalProperty("spark.job.description")
        sc.setJobDescription(f"sparkforge {stage}")
    except Exception:
        sc = None
    try:
        yield tag
    finally:
        if tagged:
            with contextlib.suppress(Exception):
                spark.removeTag(tag)
        if sc is not None:
            with contextlib.suppress(Exception):
                sc.setJobDescription(previous)


def quiet_third_party(verbose: bool = False) -> None:
    """Third-party loggers at WARNING (INFO with ``verbose``)."""
    level = logging.INFO if verbose else logging.WARNING
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(level)


def _duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class ProgressReporter:
    """One progress line every ``every_s`` seconds or ``every_steps`` steps.

    The training loop calls :meth:`step` once per optimizer step::

        progress = ProgressReporter(epochs=cfg.epochs, steps_per_epoch=len(loader))
        for epoch in range(epochs):
            for step, batch in enumerate(loader):
                ...
                progress.step(epoch, step, samples=len(batch), loss=loss.item())

    Args:
        epochs: the most epochs the run may take (the ETA assumes all of them; early
            stopping ends sooner).
        steps_per_epoch: optimizer steps per epoch (on this rank).
        every_s: seconds between lines (0: no time trigger).
        every_steps: steps between lines (0: no step trigger).
        clock: seconds, monotonic (tests pass a fake one).
        emit: where a line goes (default: this module's logger at INFO).

    Epochs and steps are counted from 0, as a loop's counters are; lines count from 1.
    ``samples/s`` and ``loss`` (the mean) cover the steps since the previous line; the ETA
    comes from the mean step time since the first step.
    """

    def __init__(self, epochs: int, steps_per_epoch: int, *, every_s: float = 30.0,
                 every_steps: int = 0, clock: Callable[[], float] = time.monotonic,
                 emit: Callable[[str], None] | None = None) -> None:
        if epochs < 1 or steps_per_epoch < 1:
            raise ValueError(f"epochs={epochs}, steps_per_epoch={steps_per_epoch}: both must "
                             "be at least 1")
        if every_s < 0 or every_steps < 0 or (every_s == 0 and every_steps == 0):
            raise ValueError(f"every_s={every_s}, every_steps={every_steps}: give a positive "
                             "interval in seconds or steps (or both)")
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.every_s, self.every_steps = every_s, every_steps
        self._clock = clock
        self._emit = emit or log.info
        self._start = clock()
        self._last_t = self._start
        self._last_done = 0
        self._samples = 0
        self._loss_sum: Any = 0.0
        self._loss_n = 0
        self.lines: list[str] = []

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def step(self, epoch: int, step: int, samples: int, loss: Any = None) -> str | None:
        """Record one step; return the progress line when one is due (it is also emitted).

        ``loss``: a number, or a torch scalar left where it was computed: it is summed
        as it is and read only when a line is written (reading a GPU tensor every step
        would make the host wait for the GPU every step)."""
        now = self._clock()
        done = epoch * self.steps_per_epoch + step + 1
        self._samples += samples
        if loss is not None:
            self._loss_sum = self._loss_sum + loss
            self._loss_n += 1
        due_time = self.every_s > 0 and now - self._last_t >= self.every_s
        due_steps = self.every_steps > 0 and done - self._last_done >= self.every_steps
        if not (due_time or due_steps):
            return None
        window = now - self._last_t
        rate = self._samples / window if window > 0 else float("inf")
        elapsed = now - self._start
        eta = elapsed / done * max(self.total_steps - done, 0)
        loss_txt = f"{float(self._loss_sum) / self._loss_n:.4f}" if self._loss_n else "n/a"
        line = (f"epoch {epoch + 1}/{self.epochs} step {step + 1}/{self.steps_per_epoch} "
                f"({100 * done / self.total_steps:.0f}%) {rate:,.0f} samples/s "
                f"loss {loss_txt} ETA {_duration(eta)}")
        self._last_t, self._last_done = now, done
        self._samples, self._loss_sum, self._loss_n = 0, 0.0, 0
        self.lines.append(line)
        self._emit(line)
        return line
