"""sparkforge.progress: the training progress line (fake clock), stage tags on a session
that has addTag (Connect-like) or also a SparkContext (classic), quiet loggers."""

from __future__ import annotations

import logging

import pytest

from sparkforge.jobs import timings_table
from sparkforge.progress import ProgressReporter, quiet_third_party, stage_tag


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_line_every_30_seconds_with_rate_loss_and_eta() -> None:
    clock, lines = Clock(), []
    p = ProgressReporter(epochs=2, steps_per_epoch=100, clock=clock, emit=lines.append)
    for step in range(100):
        clock.t += 1.0  # one step a second, 32 samples a step
        p.step(0, step, samples=32, loss=2.0 if step < 30 else 1.0)
    # lines at 30 s, 60 s, 90 s of the first epoch
    assert len(lines) == 3
    # the window's rate and mean loss; ETA = 170 steps left at 1 s per step
    assert lines[0] == "epoch 1/2 step 30/100 (15%) 32 samples/s loss 2.0000 ETA 2m50s"
    assert lines[1] == "epoch 1/2 step 60/100 (30%) 32 samples/s loss 1.0000 ETA 2m20s"
    assert p.lines == lines


class Scalar:
    """A loss as a GPU tensor looks to the reporter: it adds, and reading it (float) is
    what would make the host wait for the device; each read is counted."""

    reads = 0

    def __init__(self, v: float) -> None:
        self.v = v

    def __add__(self, other: object) -> Scalar:
        return Scalar(self.v + (other.v if isinstance(other, Scalar) else float(other)))

    __radd__ = __add__

    def __float__(self) -> float:
        Scalar.reads += 1
        return self.v


def test_losses_left_on_the_device_are_read_once_a_line() -> None:
    """The loop hands the reporter each step's loss as a tensor where it was computed:
    the line is the same as with numbers, and the losses are read only when a line is
    written (3 lines over 100 steps: 3 reads, not 100)."""
    import torch

    runs = {}
    for kind, wrap in (("float", float), ("tensor", torch.tensor), ("scalar", Scalar)):
        clock, lines = Clock(), []
        p = ProgressReporter(epochs=2, steps_per_epoch=100, clock=clock, emit=lines.append)
        for step in range(100):
            clock.t += 1.0
            p.step(0, step, samples=32, loss=wrap(2.0 if step < 30 else 1.0))
        runs[kind] = lines
    assert runs["tensor"] == runs["float"] == runs["scalar"]
    assert runs["float"][0].endswith("loss 2.0000 ETA 2m50s")
    assert Scalar.reads == 3


def test_step_trigger_and_epoch_boundaries() -> None:
    clock, lines = Clock(), []
    p = ProgressReporter(epochs=3, steps_per_epoch=4, every_s=0, every_steps=5, clock=clock,
                         emit=lines.append)
    out = []
    for epoch in range(3):
        for step in range(4):
            clock.t += 0.5
            out.append(p.step(epoch, step, samples=10))
    assert [i for i, x in enumerate(out) if x] == [4, 9]  # the 5th and 10th steps
    assert lines[0].startswith("epoch 2/3 step 1/4 (42%) 20 samples/s loss n/a ETA 4s")
    assert lines[1].startswith("epoch 3/3 step 2/4 (83%)")


def test_eta_over_an_hour_is_written_in_hours() -> None:
    clock, lines = Clock(), []
    p = ProgressReporter(epochs=10, steps_per_epoch=1000, every_steps=1, every_s=0,
                         clock=clock, emit=lines.append)
    clock.t += 1.0
    p.step(0, 0, samples=1, loss=0.5)
    assert lines[0].endswith("ETA 2h46m")  # 9,999 steps at 1 s


@pytest.mark.parametrize(("kw", "bad"), [({"epochs": 0, "steps_per_epoch": 1}, "epochs=0"),
                                         ({"epochs": 1, "steps_per_epoch": 1, "every_s": 0},
                                          "every_s=0")])
def test_bad_arguments_are_refused(kw: dict, bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        ProgressReporter(**kw)


class ConnectLike:
    """addTag/removeTag, and no SparkContext (Spark Connect raises on sparkContext)."""

    def __init__(self) -> None:
        self.tags: list[str] = []

    def addTag(self, tag: str) -> None:
        self.tags.append(tag)

    def removeTag(self, tag: str) -> None:
        self.tags.remove(tag)

    @property
    def sparkContext(self) -> None:
        raise RuntimeError("[NOT_IMPLEMENTED] sparkContext() is not implemented.")


class Context:
    def __init__(self) -> None:
        self.props: dict[str, str | None] = {"spark.job.description": "user's own"}

    def getLocalProperty(self, key: str) -> str | None:
        return self.props.get(key)

    def setJobDescription(self, value: str | None) -> None:
        self.props["spark.job.description"] = value


class ClassicLike(ConnectLike):
    def __init__(self) -> None:
        super().__init__()
        self.sc = Context()

    @property
    def sparkContext(self) -> Context:  # type: ignore[override]
        return self.sc


def test_stage_tag_over_connect_tags_and_untags_even_on_error() -> None:
    s = ConnectLike()
    seen: list[str] = []

    def stage() -> None:
        with stage_tag(s, "train") as tag:
            seen.extend([tag, *s.tags])
            raise KeyError("stage failed")

    with pytest.raises(KeyError):
        stage()
    assert seen == ["sparkforge-train", "sparkforge-train"]
    assert s.tags == []


def test_stage_tag_on_classic_sets_and_restores_the_description() -> None:
    s = ClassicLike()
    with stage_tag(s, "compress"):
        assert s.tags == ["sparkforge-compress"]
        assert s.sc.props["spark.job.description"] == "sparkforge compress"
    assert s.tags == []
    assert s.sc.props["spark.job.description"] == "user's own"


def test_third_party_loggers_quiet_unless_verbose() -> None:
    quiet_third_party(verbose=False)
    assert logging.getLogger("onnx_ir").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("onnx_ir.passes.common.unused_removal").isEnabledFor(
        logging.INFO) is False
    quiet_third_party(verbose=True)
    assert logging.getLogger("onnxscript").getEffectiveLevel() == logging.INFO
    quiet_third_party(verbose=False)


def test_timings_table_shares_and_total() -> None:
    text = timings_table({"preprocess": 30.0, "train": 10.0})
    lines = text.splitlines()
    assert lines[1].split() == ["preprocess", "30.0s", "75%"]
    assert lines[2].split() == ["train", "10.0s", "25%"]
    assert lines[-1].split() == ["total", "40.0s"]
