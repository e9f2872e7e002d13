"""The rank function in-process (one rank, no Spark): accumulation, checkpoints, models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _train_helpers import make_run
from safetensors.torch import load_file

from sparkforge.models import build_model
from sparkforge.train import checkpoint, hooks
from sparkforge.train.loop import train_rank
from sparkforge.train.spec import TrainSpec

MLP = {"name": "mlp", "num_outputs": 2, "input_dim": 6, "hidden_dim": 16, "dropout": 0.0}


def _params(root: Path, **over: Any) -> TrainSpec:
    p: dict[str, Any] = {
        "train_path": str(root / "preprocessed" / "split=train"),
        "val_path": str(root / "preprocessed" / "split=val"),
        "out_dir": str(root / "model"), "model": MLP, "inputs": ("features",),
        "target": "label_index", "epochs": 1, "batch_size": 16,
        "lr": 1e-2, "weight_decay": 0.01, "warmup_ratio": 0.0, "grad_clip": 1.0, "seed": 7,
        "patience": 5, "class_weights": None, "threads": 1, "use_cuda": False,
        "resume": False, "grad_accum_steps": 1}
    p.update(over)
    return TrainSpec(**p)


def test_gradient_accumulation_matches_the_larger_batch(tmp_path: Path) -> None:
    """2 micro-batches of 8 per step == batches of 16: same rows, same updates."""
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b")
    ra = train_rank(_params(a, batch_size=16, max_steps_per_epoch=12))
    rb = train_rank(_params(b, batch_size=8, grad_accum_steps=2, max_steps_per_epoch=24))
    wa = load_file(str(a / "model" / "model.safetensors"))
    wb = load_file(str(b / "model" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
    assert ra["history"][0]["samples"] == rb["history"][0]["samples"] == 192
    assert ra["history"][0]["lr"] == pytest.approx(rb["history"][0]["lr"])


def test_compiled_training_matches_eager(tmp_path: Path) -> None:
    """train.compile: the same rows and updates through torch.compile (inductor, on CPU
    here) end in the weights and the losses of the eager run, within float tolerance; the
    last, shorter batch of the epoch runs too. The saved weights keep the module's names."""
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b")
    from torch._dynamo.utils import counters

    counters.clear()
    ra = train_rank(_params(a, batch_size=40, epochs=2))
    assert counters["stats"]["unique_graphs"] == 0  # eager: nothing compiled
    rb = train_rank(_params(b, batch_size=40, epochs=2, compile=True))
    assert counters["stats"]["unique_graphs"] >= 1  # the compiled run went through dynamo
    counters.clear()
    wa = load_file(str(a / "model" / "model.safetensors"))
    wb = load_file(str(b / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys() == set(build_model(MLP).state_dict())
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
    for ea, eb in zip(ra["history"], rb["history"], strict=True):
        assert ea["samples"] == eb["samples"]
        assert ea["samples"] % 40 != 0  # the short last batch ran too
        assert eb["train_loss"] == pytest.approx(ea["train_loss"], rel=1e-4)
        assert eb["val_loss"] == pytest.approx(ea["val_loss"], rel=1e-4)


def test_checkpoints_every_epoch_and_resume_continues(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run")
    first = train_rank(_params(root, epochs=2, class_weights=[1.0, 1.5]))
    folder = checkpoint.latest(root / "model" / "checkpoint")
    assert folder is not None
    assert folder.name == "epoch-0001"
    weights, state = checkpoint.load(folder)
    assert set(state) >= {"optimizer", "scheduler", "rng", "epoch", "best", "bad_epochs",
                          "history"}
    assert state["epoch"] == 1
    assert len(state["rng"]) == 1
    build_model(MLP).load_state_dict(weights, strict=True)
    # A half-written checkpoint (killed mid-write) is never picked.
    (root / "model" / "checkpoint" / ".epoch-0002.tmp-123").mkdir()
    (root / "model" / "checkpoint" / "epoch-0003").mkdir()  # no files: incomplete
    assert checkpoint.latest(root / "model" / "checkpoint") == folder
    resumed = train_rank(_params(root, epochs=4, resume=True, class_weights=[1.0, 1.5]))
    assert resumed["resumed_from_epoch"] == 2
    assert [h["epoch"] for h in resumed["history"]] == [0, 1, 2, 3]
    assert resumed["history"][:2] == first["history"]
    # The schedule is the resumed run's (4 epochs, no warmup): a quarter of the peak lr
    # is left after epoch 2.
    assert resumed["history"][2]["lr"] == pytest.approx(0.25 * 1e-2)
    assert [e for e, _ in checkpoint.complete(root / "model" / "checkpoint")] == [3]
    assert not list((root / "model" / "checkpoint").glob(".epoch-*"))


def test_resume_reproduces_an_uninterrupted_run(tmp_path: Path) -> None:
    """Model, optimizer, scheduler and RNG state all come back: same weights either way."""
    straight = make_run(tmp_path / "straight")
    split = make_run(tmp_path / "split")
    spec = {"name": "mlp", "num_outputs": 2, "input_dim": 6, "hidden_dim": 16, "dropout": 0.3}
    train_rank(_params(straight, epochs=3, model=spec))
    fail = hooks.TrainHooks(fail_at=hooks.FailAt(rank=0, epoch=1, step=3, raise_=True))
    with hooks.installed(fail), pytest.raises(hooks.InjectedFailure):
        train_rank(_params(split, epochs=3, model=spec))
    assert checkpoint.latest(split / "model" / "checkpoint").name == "epoch-0000"
    train_rank(_params(split, epochs=3, model=spec, resume=True))
    a = load_file(str(straight / "model" / "checkpoint" / "epoch-0002" / "model.safetensors"))
    b = load_file(str(split / "model" / "checkpoint" / "epoch-0002" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_transformer_trains_and_exports_to_onnx(tmp_path: Path) -> None:
    from sparkforge.compress.onnx_export import check_parity, export_onnx

    root = make_run(tmp_path / "run", text=True)
    spec = {"name": "transformer", "num_outputs": 2, "vocab_size": 120, "hidden_dim": 32,
            "num_layers": 2, "num_heads": 4, "ffn_dim": 64, "max_length": 12, "dropout": 0.1}
    result = train_rank(_params(root, model=spec, inputs=("input_ids", "attention_mask"),
                              epochs=3, batch_size=8, lr=5e-3))
    assert result["best_val_metric"] > 0.8
    model = build_model(spec)
    model.load_state_dict(load_file(str(root / "model" / "model.safetensors")), strict=True)
    model.eval()
    rng = np.random.default_rng(0)
    mask = (np.arange(10)[None, :] < rng.integers(1, 11, size=(6, 1))).astype(np.int64)
    ids = rng.integers(1, 120, size=(6, 10)) * mask
    with torch.no_grad():  # padding does not change the result
        short = model(torch.from_numpy(ids), torch.from_numpy(mask))
        padded = model(torch.from_numpy(np.pad(ids, ((0, 0), (0, 2)))),
                       torch.from_numpy(np.pad(mask, ((0, 0), (0, 2)))))
    torch.testing.assert_close(short, padded, rtol=0, atol=1e-5)
    path = tmp_path / "model.onnx"
    export_onnx(model, spec, path, {"input_ids": ids, "attention_mask": mask})
    parity = check_parity(model, path, {"input_ids": ids, "attention_mask": mask})
    assert parity["max_abs_logit_diff"] < 1e-4
    assert json.loads(json.dumps(spec)) == spec  # the spec is what model.json stores


def test_kept_epoch_is_the_best_validation_loss_and_is_reported(tmp_path: Path) -> None:
    """On a small validation set accuracy saturates early while the loss keeps falling:
    the kept weights are those of the epoch with the lowest validation loss (ties to the
    later epoch), and the result says which epoch was kept and why training stopped."""
    root = make_run(tmp_path / "run")
    result = train_rank(_params(root, epochs=6, lr=3e-2, patience=10))
    history = result["history"]
    losses = [h["val_loss"] for h in history]
    best = max(i for i, loss in enumerate(losses) if loss == min(losses))
    assert result["kept_epoch"] == history[best]["epoch"]
    assert result["kept_epoch"] > 0  # epoch 0's accuracy ties or wins, its loss does not
    assert result["stop_reason"] == "reached train.epochs=6"
    # The saved weights really are that epoch's: their validation loss, recomputed here
    # from the val Parquet, is the lowest one in the history.
    import pyarrow.parquet as pq

    model = build_model(MLP)
    model.load_state_dict(load_file(str(root / "model" / "model.safetensors")), strict=True)
    model.eval()
    val = pq.read_table(root / "preprocessed" / "split=val").to_pandas()
    x = torch.from_numpy(np.stack(val["features"].to_numpy()).astype(np.float32))
    y = torch.from_numpy(val["label_index"].to_numpy().astype(np.int64))
    with torch.no_grad():
        loss = float(torch.nn.functional.cross_entropy(model(x), y))
    assert loss == pytest.approx(min(losses), rel=1e-4)
    # Early stopping: patience 1 stops after the first epoch without a better loss.
    root2 = make_run(tmp_path / "run2")
    short = train_rank(_params(root2, epochs=30, lr=3e-1, patience=1))
    assert len(short["history"]) < 30
    assert short["stop_reason"].startswith("early stopping")
    assert short["kept_epoch"] == len(short["history"]) - 2
