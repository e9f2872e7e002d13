"""The training core's contract and pieces without Spark: TrainSpec, the schedule, the
test hooks, and the in-process fine-tune (the same Trainer as training). ~5 s."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from sparkforge.compress.distill import DistillLoss, distill_spec
from sparkforge.compress.finetune import finetune
from sparkforge.config import load_config
from sparkforge.data import prepare
from sparkforge.models import build_model
from sparkforge.train import hooks, spec
from sparkforge.train.loop import make_scheduler
from sparkforge.train.spec import LabelLoss, TrainSpec, spec_from_config

ROOT = Path(__file__).resolve().parents[2]


def _spec(**over: object) -> TrainSpec:
    base: dict[str, object] = {"model": {"name": "mlp"}, "inputs": ["features"],
                               "target": "label_index", "checkpoint": False}
    return TrainSpec(**{**base, **over})  # type: ignore[arg-type]


def test_select_fold_agrees_with_prepare() -> None:
    assert spec.SELECT_FOLD == prepare.SELECT_FOLD


def test_spec_is_frozen_picklable_and_validated() -> None:
    s = _spec(class_weights=[1.0, 2.0])
    assert s.inputs == ("features",)
    assert s.class_weights == (1.0, 2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.epochs = 3  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(s)) == s
    d = distill_spec(s, soft_labels=Path("/s"), val_dir=Path("/v"), out_dir=Path("/o"),
                     student={"name": "mlp"}, epochs=2, lr=0.1, alpha=0.5, temperature=3.0)
    assert pickle.loads(pickle.dumps(d)).loss == DistillLoss(alpha=0.5, temperature=3.0)
    assert d.columns() == ["features", "label_index", "teacher_logits"]
    assert s.columns() == ["features", "label_index"]
    for field, value in (("epochs", 0), ("batch_size", 0), ("grad_accum_steps", 0),
                         ("select_by", "accuracy"), ("loader", "parquet")):
        with pytest.raises(ValueError, match=rf"TrainSpec\.{field}="):
            _spec(**{field: value})
    with pytest.raises(ValueError, match="needs out_dir"):
        _spec(checkpoint=True)
    # A petastorm spec is built before its converter (the train job makes the converter
    # from the spec's columns); the loader refuses to start without one.
    from sparkforge.train.loader import make_loader

    assert _spec(loader="petastorm").converter is None
    with pytest.raises(ValueError, match="needs a SparkDatasetConverter"):
        make_loader("petastorm", columns=["features"], rank=0, world=1, batch_size=4, seed=0)


def test_spec_from_config_takes_the_train_settings() -> None:
    cfg = load_config(ROOT / "conf" / "tabular_classification.yaml", [
        "data.input=x.csv", "data.label_column=y", "train.epochs=7", "train.lr=0.02",
        "train.grad_accum_steps=3", "train.select_by=metric", "train.seed=5",
        "train.compile=true"])
    s = spec_from_config(cfg, model={"name": "mlp"}, out_dir="/o", batch_size=9)
    assert (s.epochs, s.lr, s.grad_accum_steps, s.select_by, s.seed, s.batch_size) == (
        7, 0.02, 3, "metric", 5, 9)
    assert s.compile is True
    assert TrainSpec(model={}, inputs=("x",), target="y", checkpoint=False).compile is False
    assert (s.inputs, s.target, s.regression) == (("features",), "label_index", False)
    assert s.patience == cfg.train.early_stopping_patience
    assert s.loss == LabelLoss()
    with pytest.raises(TypeError, match="no TrainSpec field"):
        spec_from_config(cfg, model={}, pre_dir="/p")


@pytest.mark.parametrize(("total", "warmup"), [(100, 6), (10, 0), (7, 1), (30, 29)])
def test_schedule_is_linear_warmup_then_linear_decay(total: int, warmup: int) -> None:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = make_scheduler(opt, total, warmup)
    seen = []
    for _ in range(total + 2):
        seen.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    # the closed form: (s + 1) / warmup during warmup, then 1 -> 0 linearly
    want = [0.5 * ((s + 1) / warmup if s < warmup
                   else max(0.0, 1 - (s - warmup) / max(1, total - warmup)))
            for s in range(total + 2)]
    np.testing.assert_allclose(seen, want, atol=1e-12)


def test_a_resumed_schedule_follows_the_new_length() -> None:
    """train.resume with more train.epochs: the step count comes back, the length is the
    new run's (a checkpointed SequentialLR would keep the old one)."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    first = make_scheduler(opt, 10, 2)
    for _ in range(6):
        opt.step()
        first.step()
    saved = first.state_dict()
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    resumed = make_scheduler(opt2, 20, 2)
    resumed.load_state_dict(saved)
    opt2.step()
    resumed.step()  # step 7 of 20
    assert resumed.get_last_lr()[0] == pytest.approx(1 - (7 - 2) / 18)


def test_hooks_round_trip_and_uninstall() -> None:
    h = hooks.TrainHooks(fail_at=hooks.FailAt(rank=1, epoch=2, step=3, once_file="/f"),
                         trace_dir="/t", trace_column="row")
    assert hooks.TrainHooks.from_json(h.to_json()) == h
    assert hooks.TrainHooks.from_json("{}") == hooks.TrainHooks()
    assert hooks.active() is None
    with hooks.installed(h):
        assert hooks.active() == h
        hooks.maybe_fail(0, 2, 3)  # another rank: nothing happens
    assert hooks.active() is None
    with hooks.installed(hooks.TrainHooks(fail_at=hooks.FailAt(0, 0, 0, raise_=True))), \
            pytest.raises(hooks.InjectedFailure):
        hooks.maybe_fail(0, 0, 0)


def _data(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return {"features": x, "label_index": (x[:, 0] - x[:, 1] > 0).astype(np.int64)}


def _accuracy(model: torch.nn.Module, data: dict[str, np.ndarray]) -> float:
    with torch.no_grad():
        pred = model(torch.from_numpy(data["features"])).argmax(-1).numpy()
    return float((pred == data["label_index"]).mean())


def test_finetune_keeps_the_best_epoch_and_never_makes_things_worse() -> None:
    rng = np.random.default_rng(3)
    train, val = _data(rng, 400), _data(rng, 200)
    torch.manual_seed(0)
    model = build_model({"name": "mlp", "num_outputs": 2, "input_dim": 6, "hidden_dim": 16,
                         "dropout": 0.0})
    kw = {"inputs": ["features"], "target": "label_index", "regression": False,
          "batch_size": 32}
    history = finetune(model, train, val, epochs=3, lr=1e-2, **kw)  # type: ignore[arg-type]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    best = max(h["val_metric"] for h in history)
    assert best > 0.9
    # The weights left in the model are the best epoch's, recomputed here.
    assert _accuracy(model.eval(), val) == pytest.approx(best)
    # A fine-tune that wrecks the model (a huge step) leaves the starting weights.
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = finetune(model, train, val, epochs=2, lr=50.0, grad_clip=0.0,
                       **kw)  # type: ignore[arg-type]
    assert max(h["val_metric"] for h in history[1:]) < history[0]["val_metric"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
