"""Training under TorchDistributor on the session's local[2] master (2 CPU ranks, gloo).

Each launch costs ~10-20 s; together these stay under ~3 minutes on 2 cores.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from _train_helpers import SPLIT_FILES, config, make_run, traced, train_ids

from sparkforge.config import ConfigError
from sparkforge.jobs.train import checkpoint_epochs, run_train
from sparkforge.models import build_model, load_weights
from sparkforge.train import hooks


def _check_model(root: Path) -> None:
    spec = json.loads((root / "model" / "model.json").read_text())
    load_weights(build_model(spec), root / "model" / "model.safetensors")  # strict


def test_too_many_processes_fails_fast_naming_the_setting(spark: Any, tmp_path: Path) -> None:
    root = make_run(tmp_path / "run")
    t0 = time.time()
    with pytest.raises(ConfigError, match=r"train\.num_processes=3.*2 task slot"):
        run_train(spark, config(root, num_processes=3, local_mode=False))
    assert time.time() - t0 < 5
    assert not (root / "model" / "model.safetensors").exists()


@pytest.mark.parametrize("local_mode", [True, False])
def test_train_under_torch_distributor(spark: Any, tmp_path: Path, local_mode: bool) -> None:
    """Both launch modes: every train id once per epoch over the ranks, equal steps."""
    root = make_run(tmp_path / "run")
    trace = tmp_path / "trace"
    with hooks.installed(hooks.TrainHooks(trace_dir=str(trace))):
        summary = run_train(spark, config(root, local_mode=local_mode, epochs=2))

    n = sum(SPLIT_FILES["train"])  # 201: odd, so one rank repeats one row
    assert summary["epochs_run"] == 2
    assert summary["local_mode"] is local_mode
    assert summary["steps_per_epoch"] == math.ceil(math.ceil(n / 2) / 16)  # 7
    for epoch in range(2):
        counts, pad, steps = traced(trace, epoch, 2)
        assert steps == [summary["steps_per_epoch"]] * 2
        assert set(counts) == set(train_ids())
        assert sum(counts.values()) == n + 1
        assert pad == 1
    history = json.loads((root / "model" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    assert all(h["val_rows"] == sum(SPLIT_FILES["val"]) for h in history)
    assert history[-1]["val_metric"] > 0.75
    assert checkpoint_epochs(root) == [1]
    _check_model(root)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["train"]["history"] == history
    assert "model/model.safetensors" in manifest["artifacts"]


def test_killed_rank_resumes_at_next_epoch(spark: Any, tmp_path: Path) -> None:
    root = make_run(tmp_path / "run")
    cfg = config(root, epochs=3)
    kill = hooks.TrainHooks(fail_at=hooks.FailAt(rank=1, epoch=1, step=2))
    with hooks.installed(kill), pytest.raises(Exception, match=r"(?s)exit|fail|Fail"):
        run_train(spark, cfg)
    assert checkpoint_epochs(root) == [0]  # epoch 0 completed and was checkpointed
    assert not (root / "model" / "history.json").exists()

    summary = run_train(spark, config(root, epochs=3, resume=True))
    assert summary["resumed_from_epoch"] == 1
    assert [h["epoch"] for h in summary["history"]] == [0, 1, 2]
    assert checkpoint_epochs(root) == [2]
    _check_model(root)
    # A fresh run (resume=false) ignores and clears the old checkpoints.
    fresh = run_train(spark, config(root, epochs=1))
    assert fresh["resumed_from_epoch"] is None
    assert checkpoint_epochs(root) == [0]


def test_fsdp_on_two_cpu_ranks_shards_and_resumes(spark: Any, tmp_path: Path) -> None:
    """FSDP2 on gloo: parameters sharded across the ranks, full weights saved, resumable."""
    root = make_run(tmp_path / "run", text=True)
    cfg = config(root, text=True, model="transformer", fsdp=True, epochs=1, lr=5e-3,
                 batch_size=4, num_layers=2, num_heads=4, grad_accum_steps=2)
    first = run_train(spark, cfg)
    assert first["fsdp"] is True
    assert first["epochs_run"] == 1
    per_rank = first["param_numel_per_rank"]
    assert len(per_rank) == 2
    assert sum(per_rank) >= first["param_numel"]
    assert max(per_rank) < 0.6 * first["param_numel"]  # each rank holds about half
    _check_model(root)
    summary = run_train(spark, config(root, text=True, model="transformer", fsdp=True,
                                      epochs=3, lr=5e-3, batch_size=4, num_layers=2,
                                      num_heads=4, grad_accum_steps=2, resume=True))
    assert summary["resumed_from_epoch"] == 1
    assert [h["epoch"] for h in summary["history"]] == [0, 1, 2]
    assert summary["best_val_metric"] > 0.75  # the label token is easy to find
    _check_model(root)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["train"]["fsdp"] is True


def test_failed_barrier_stage_is_relaunched_from_the_checkpoint(spark: Any, tmp_path: Path
                                                                ) -> None:
    """local_mode=false: rank 1 dies once in epoch 1; train.max_restarts relaunches the
    barrier stage, which continues from epoch 0's checkpoint instead of starting over."""
    root = make_run(tmp_path / "run")
    once = hooks.FailAt(rank=1, epoch=1, step=2, once_file=str(tmp_path / "failed"))
    with hooks.installed(hooks.TrainHooks(fail_at=once)):
        summary = run_train(spark, config(root, local_mode=False, epochs=2, max_restarts=1))
    assert (tmp_path / "failed").exists()
    assert summary["restarts"] == 1
    assert summary["resumed_from_epoch"] == 1
    assert [h["epoch"] for h in summary["history"]] == [0, 1]
    assert checkpoint_epochs(root) == [1]
