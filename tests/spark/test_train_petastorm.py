"""The petastorm lane: make_spark_converter + make_torch_dataloader(cur_shard, shard_count).

petastorm 0.12.1 cannot import with pyarrow >= 15 and needs numpy < 2, so these tests run
in their own environment (`make test-petastorm`: .venv-petastorm with pyspark 4.0.5,
pyarrow 14.0.2, numpy 1.26.4); the main run ignores this file. Every epoch must yield
rows, and exactly the rows the shards' Parquet footers promise (petastorm 0.13.x was seen
returning zero rows for a whole epoch without an error).
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("petastorm", reason="the petastorm lane runs in .venv-petastorm")

from _train_helpers import SPLIT_FILES, config, make_run, traced, train_rows

from sparkforge.jobs.train import checkpoint_epochs, petastorm_converter, run_train
from sparkforge.train import hooks
from sparkforge.train.loader import PAD_KEY, PetastormLoader

COLUMNS = ["features", "label_index"]


@pytest.fixture(scope="module")
def converter(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = make_run(tmp_path_factory.mktemp("petastorm") / "run")
    conv = petastorm_converter(spark, config(root), ["row", *COLUMNS])
    yield conv
    conv.delete()


def test_environment_is_the_pinned_one() -> None:
    import numpy
    import petastorm
    import pyarrow
    import pyspark

    assert petastorm.__version__ == "0.12.1"
    assert pyarrow.__version__ == "14.0.2"
    assert numpy.__version__ == "1.26.4"
    assert pyspark.__version__ == "4.0.5"


@pytest.mark.parametrize("world", [2, 3])
def test_every_epoch_yields_each_row_once_per_shard(converter: Any, world: int) -> None:
    n = sum(SPLIT_FILES["train"])
    loaders = [PetastormLoader(converter, ["row", *COLUMNS], r, world, batch_size=16, seed=1)
               for r in range(world)]
    assert sum(loaders[0].shard_rows) == n == len(converter)
    for epoch in range(3):
        counts: Counter[str] = Counter()
        steps = []
        for ld in loaders:
            batches = list(ld.epoch(epoch))
            steps.append(len(batches))
            real = [b for b in batches if not b[PAD_KEY].any()]
            rows = sum(len(b["row"]) for b in real)
            assert rows > 0, f"epoch {epoch}: shard {ld.rank} yielded no rows"
            assert rows == ld.expected_rows == ld.rows_read
            for b in real:
                counts.update(b["row"].tolist())
                assert b["features"].shape == (len(b["row"]), 6)
                assert b["label_index"].dtype.kind == "i"
        assert len(set(steps)) == 1, f"ranks ran different step counts {steps}"
        assert steps[0] == max(math.ceil(r / 16) for r in loaders[0].shard_rows)
        assert counts == Counter(train_rows())


def test_a_short_epoch_fails_loudly(converter: Any) -> None:
    class Empty:
        """A converter whose dataloader yields nothing (petastorm 0.13.x's failure)."""

        file_urls = converter.file_urls

        def make_torch_dataloader(self, **_: Any) -> Any:
            return contextlib.nullcontext([])

    loader = PetastormLoader(Empty(), COLUMNS, 0, 2, batch_size=16, seed=0)
    with pytest.raises(RuntimeError, match=r"yielded 0 rows in epoch 0"):
        list(loader.epoch(0))


@pytest.mark.parametrize("local_mode", [True, False])
def test_train_with_petastorm_loader(spark: Any, tmp_path: Path, local_mode: bool) -> None:
    root = make_run(tmp_path / "run")
    trace = tmp_path / "trace"
    with hooks.installed(hooks.TrainHooks(trace_dir=str(trace), trace_column="row")):
        summary = run_train(spark, config(root, loader="petastorm", local_mode=local_mode))
    assert summary["loader"] == "petastorm"
    assert summary["epochs_run"] == 2
    n = sum(SPLIT_FILES["train"])
    for epoch in range(2):
        counts, pad, steps = traced(trace, epoch, 2)
        assert steps == [summary["steps_per_epoch"]] * 2
        assert set(counts) == set(train_rows())
        assert sum(counts.values()) == n + pad
    assert summary["history"][-1]["val_metric"] > 0.75
    assert checkpoint_epochs(root) == [1]
    assert not list((root / "petastorm_cache").glob("*")), "the converter cache is deleted"
