"""The training function each DDP rank runs (launched by TorchDistributor or torchrun).

Pure torch + pyarrow: no Spark here. ``train_fn(params)`` takes a plain dict so
it pickles by reference, and returns the same dict on every rank (TorchDistributor
with ``local_mode=True`` hands back whichever rank finishes last).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
BEST_WEIGHTS = "model.safetensors"


def _atomic_dir_write(final: Path, write: Any) -> None:
    """Write into a sibling temp folder, then swap it in with renames (rank 0 only)."""
    import shutil

    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _lr_lambda(total_steps: int, warmup_steps: int) -> Any:
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        rest = max(1, total_steps - warmup_steps)
        return max(0.0, 1.0 - (step - warmup_steps) / rest)
    return f


def train_fn(params: dict[str, Any]) -> dict[str, Any]:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from sparkforge.models import build_model, load_weights, save_weights
    from sparkforge.train.loader import ShardedLoader, read_split, trim_padding

    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = bool(params["use_cuda"]) and torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    torch.set_num_threads(int(params["threads"]))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")

    seed = int(params["seed"])
    torch.manual_seed(seed)
    np.random.seed(seed)
    regression = params["task"] == "regression"
    inputs: list[str] = params["inputs"]
    target = "label" if regression else "label_index"
    pre = Path(params["pre_dir"])
    model_dir = Path(params["model_dir"])

    train_data = read_split(pre / "split=train", [*inputs, target])
    loader = ShardedLoader(train_data, rank, world, int(params["batch_size"]), seed)
    val_data = read_split(pre / "split=val", [*inputs, target]) if rank == 0 else {}

    model = build_model(params["spec"]).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=float(params["lr"]),
                            weight_decay=float(params["weight_decay"]))
    steps_per_epoch = len(loader)
    if params.get("max_steps_per_epoch"):
        steps_per_epoch = min(steps_per_epoch, int(params["max_steps_per_epoch"]))
    total = steps_per_epoch * int(params["epochs"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(total, int(total * float(params["warmup_ratio"]))))

    start_epoch, best, bad_epochs = 0, -math.inf, 0
    history: list[dict[str, Any]] = []
    ckpt = model_dir / CHECKPOINT_DIR
    if params.get("resume") and (ckpt / "state.pt").exists():
        state = torch.load(ckpt / "state.pt", weights_only=True, map_location="cpu")
        load_weights(model, ckpt / "last.safetensors")
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start_epoch, best, bad_epochs = int(state["epoch"]) + 1, float(state["best"]), \
            int(state["bad_epochs"])
        history = list(state.get("history", []))
        if rank == 0:
            log.info("resuming after epoch %d from %s", start_epoch - 1, ckpt)

    ddp: torch.nn.Module = DDP(model) if world > 1 else model
    weight = (torch.tensor(params["class_weights"], dtype=torch.float32, device=device)
              if params.get("class_weights") else None)
    loss_fn: torch.nn.Module = (torch.nn.MSELoss() if regression
                                else torch.nn.CrossEntropyLoss(weight=weight))
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if use_cuda else None

    def to_t(batch: dict[str, np.ndarray]) -> list[Any]:
        return [torch.from_numpy(np.ascontiguousarray(batch[k])).to(device) for k in inputs]

    def forward(xs: list[Any]) -> Any:
        if amp is None:
            return ddp(*xs)
        with amp:
            return ddp(*xs).float()

    stop = False
    t_start = time.time()
    for epoch in range(start_epoch, int(params["epochs"])):
        ddp.train()
        t0, seen, loss_sum = time.time(), 0, 0.0
        for step, raw in enumerate(loader.epoch(epoch)):
            if step >= steps_per_epoch:
                break
            batch = trim_padding(raw)
            y = torch.from_numpy(batch[target]).to(device)
            out = forward(to_t(batch))
            loss = loss_fn(out.squeeze(-1), y.float()) if regression else loss_fn(out, y.long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if float(params["grad_clip"]) > 0:
                torch.nn.utils.clip_grad_norm_(trainable, float(params["grad_clip"]))
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(y)
            seen += len(y)
        stats = torch.tensor([loss_sum, float(seen)], dtype=torch.float64)
        if world > 1:
            dist.all_reduce(stats)
        elapsed = time.time() - t0
        total_loss, total_seen = float(stats[0]), float(stats[1])
        record: dict[str, Any] = {"epoch": epoch,
                                  "train_loss": total_loss / max(total_seen, 1.0),
                                  "samples_per_s": total_seen / max(elapsed, 1e-9),
                                  "epoch_s": elapsed}
        if rank == 0:
            record.update(_evaluate(model, val_data, inputs, target, regression, device,
                                    int(params["batch_size"]) * 4))
            metric = record["val_metric"]
            improved = metric > best
            if improved:
                best, bad_epochs = metric, 0
                model_dir.mkdir(parents=True, exist_ok=True)
                save_weights(model, model_dir / (BEST_WEIGHTS + ".tmp"))
                (model_dir / (BEST_WEIGHTS + ".tmp")).replace(model_dir / BEST_WEIGHTS)
            else:
                bad_epochs += 1

            state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "rng": torch.get_rng_state(), "epoch": epoch, "best": best,
                     "bad_epochs": bad_epochs, "history": [*history, record]}

            def _write(d: Path, s: dict[str, Any] = state) -> None:
                save_weights(model, d / "last.safetensors")
                torch.save(s, d / "state.pt")
            _atomic_dir_write(ckpt, _write)
            stop = bad_epochs >= int(params["patience"])
            record["elapsed_s"] = time.time() - t_start
            history.append(record)
            print(f"[sparkforge] epoch {epoch}: train_loss={record['train_loss']:.4f} "
                  f"val_loss={record['val_loss']:.4f} {record['metric_name']}="
                  f"{record['val_metric']:.4f} samples/s={record['samples_per_s']:.1f} "
                  f"elapsed={record['elapsed_s']:.1f}s", flush=True)
        if world > 1:
            flag = torch.tensor([1 if stop else 0])
            dist.broadcast(flag, src=0)
            stop = bool(flag.item())
        if stop:
            break

    result: list[Any] = [{"history": history, "best_val_metric": best}]
    if world > 1:
        dist.broadcast_object_list(result, src=0)
        dist.barrier()
        dist.destroy_process_group()
    final: dict[str, Any] = result[0]
    return final


def _evaluate(model: Any, data: dict[str, np.ndarray], inputs: list[str], target: str,
              regression: bool, device: Any, batch_size: int) -> dict[str, Any]:
    """Validation loss and metric on rank 0 (accuracy, or -RMSE for regression)."""
    import torch

    from sparkforge.train.loader import ShardedLoader, trim_padding

    model.eval()
    n = len(data.get(target, []))
    if n == 0:
        return {"val_loss": float("nan"), "val_metric": 0.0,
                "metric_name": "val_neg_rmse" if regression else "val_accuracy"}
    loss_sum, correct, sq = 0.0, 0, 0.0
    with torch.no_grad():
        for raw in ShardedLoader(data, 0, 1, batch_size, 0, shuffle=False).epoch(0):
            b = trim_padding(raw)
            xs = [torch.from_numpy(np.ascontiguousarray(b[k])).to(device) for k in inputs]
            out = model(*xs).float()
            y = torch.from_numpy(b[target]).to(device)
            if regression:
                err = (out.squeeze(-1) - y.float()) ** 2
                sq += float(err.sum())
                loss_sum += float(err.sum())
            else:
                loss_sum += float(torch.nn.functional.cross_entropy(out, y.long(), reduction="sum"))
                correct += int((out.argmax(-1) == y).sum())
    model.train()
    if regression:
        return {"val_loss": loss_sum / n, "val_metric": -math.sqrt(sq / n),
                "metric_name": "val_neg_rmse"}
    return {"val_loss": loss_sum / n, "val_metric": correct / n, "metric_name": "val_accuracy"}
