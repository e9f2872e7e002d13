"""The training function every rank runs (under TorchDistributor, torchrun, or alone).

``train_fn(params)`` is pure torch: DDP (or FSDP2 with ``params["fsdp"]``) on gloo (CPU)
or NCCL (GPU), AdamW with linear warmup + linear decay, gradient clipping, gradient
accumulation, class weights, bf16 autocast on GPU, validation on every rank's share of
the val split, early stopping, and a checkpoint after every epoch (see
:mod:`sparkforge.train.checkpoint`). Artifacts are written by rank 0 only; every rank
returns the same value (rank 0's, broadcast), because with ``local_mode=True``
TorchDistributor returns whichever rank finished last.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from sparkforge.train import checkpoint
from sparkforge.train.losses import classification_loss

log = logging.getLogger(__name__)

CHECKPOINT_DIR = checkpoint.CHECKPOINT_DIR
BEST_WEIGHTS = "model.safetensors"


def _lr_lambda(total_steps: int, warmup_steps: int) -> Any:
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        rest = max(1, total_steps - warmup_steps)
        return max(0.0, 1.0 - (step - warmup_steps) / rest)
    return f


def selection_score(record: dict[str, Any], select_by: str) -> float:
    """Higher is better: -validation loss, or the validation metric (accuracy / -RMSE);
    the training loss stands in when validation fold 0 has no rows."""
    if select_by == "metric":
        return float(record["val_metric"])
    loss = float(record["val_loss"])
    return -(float(record["train_loss"]) if math.isnan(loss) else loss)


def _seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    import torch

    np_state: tuple[Any, ...] = tuple(np.random.get_state(legacy=True))
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "numpy": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_pos": int(np_state[2]),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32),
                         state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class InjectedFailure(RuntimeError):
    """Raised by the ``_fail_at`` test hook when it is told not to kill the process."""


def _maybe_fail(params: dict[str, Any], rank: int, epoch: int, step: int) -> None:
    """Test hook: ``params["_fail_at"] = {"rank", "epoch", "step"}`` kills that rank there
    (``"raise": true``: raises :class:`InjectedFailure` instead, for in-process tests)."""
    at = params.get("_fail_at")
    if at and (rank, epoch, step) == (at["rank"], at["epoch"], at["step"]):
        if at.get("once_file"):  # fail only the first attempt (a retried stage goes on)
            marker = Path(at["once_file"])
            if marker.exists():
                return
            marker.write_text("failed once")
        print(f"[sparkforge] rank {rank}: injected failure at epoch {epoch} step {step}",
              flush=True)
        if at.get("raise"):
            raise InjectedFailure(f"rank {rank} epoch {epoch} step {step}")
        os._exit(1)


def _shard(model: Any) -> None:
    """FSDP2: each encoder layer and the embeddings block, then the root (the rest)."""
    from torch.distributed.fsdp import fully_shard

    from sparkforge.models.minilm import BertEmbeddings, BertLayer

    # Whole blocks only: a block may read its parameters outside their own forward
    # (BertEmbeddings adds token_type_embeddings.weight[0] directly), which a separately
    # sharded nn.Embedding would not allow.
    for module in list(model.modules()):
        if module is not model and isinstance(module, (BertLayer, BertEmbeddings)) and any(
                p.requires_grad for p in module.parameters()):
            fully_shard(module)
    fully_shard(model)


def _local_numel(model: Any) -> int:
    return sum((p.to_local() if hasattr(p, "to_local") else p).numel()
               for p in model.parameters())


def setup_rank(params: dict[str, Any]) -> tuple[int, int, Any, bool]:
    """Per-rank start: (rank, world, device, use_cuda) from torchrun's environment;
    pins the GPU, sets torch threads and joins the process group (NCCL on GPU, gloo
    on CPU). Shared by every function TorchDistributor launches."""
    import torch
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = bool(params.get("use_cuda")) and torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    torch.set_num_threads(int(params["threads"]))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return rank, world, device, use_cuda


def finish_rank(result: dict[str, Any], world: int) -> dict[str, Any]:
    """Per-rank end: every rank returns rank 0's ``result`` (with ``local_mode=True``
    TorchDistributor may hand back any rank's value), then leaves the process group.
    The counterpart of :func:`setup_rank`."""
    if world == 1:
        return result
    import torch.distributed as dist

    box: list[Any] = [result]
    dist.broadcast_object_list(box, src=0)
    dist.barrier()
    dist.destroy_process_group()
    final: dict[str, Any] = box[0]
    return final


def train_fn(params: dict[str, Any]) -> dict[str, Any]:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from sparkforge.data.prepare import FOLD, SELECT_FOLD
    from sparkforge.models import build_model
    from sparkforge.train.loader import (
        PAD_KEY,
        ArrowLoader,
        has_column,
        make_loader,
        trim_padding,
    )

    rank, world, device, use_cuda = setup_rank(params)
    t_launch = time.time()

    seed = int(params["seed"])
    fsdp = bool(params.get("fsdp"))
    regression = params["task"] == "regression"
    inputs: list[str] = params["inputs"]
    target = "label" if regression else "label_index"
    pre = Path(params["pre_dir"])
    model_dir = Path(params["model_dir"])
    ckpt_root = model_dir / CHECKPOINT_DIR
    epochs = int(params["epochs"])
    batch_size = int(params["batch_size"])
    accum = max(1, int(params.get("grad_accum_steps", 1)))

    # Same seed on every rank for the model build: FSDP shards each rank's own copy.
    _seed_all(seed)
    model = build_model(params["spec"])
    resume_dir = checkpoint.latest(ckpt_root) if params.get("resume") else None
    state: dict[str, Any] = {}
    if resume_dir is not None:
        weights, state = checkpoint.load(resume_dir)
        if bool(state.get("fsdp")) != fsdp:
            raise RuntimeError(f"{resume_dir} was written with train.fsdp={state.get('fsdp')}; "
                               f"resume with the same setting (or train.resume=false)")
        model.load_state_dict(weights, strict=True)
    model.to(device)
    _seed_all(seed + 1_000_003 * rank)  # dropout differs across ranks

    # Test hook: params["_trace_dir"] makes every rank record the ids (or the values of
    # params["_trace_column"]) it trained on.
    trace_dir = Path(params["_trace_dir"]) if params.get("_trace_dir") else None
    trace_col = str(params.get("_trace_column", "id"))
    loader = make_loader(params.get("loader", "arrow"),
                         columns=[*inputs, target, *([trace_col] if trace_dir else [])],
                         rank=rank,
                         world=world, batch_size=batch_size, seed=seed,
                         path=pre / "split=train", converter=params.get("converter"))
    # Only fold 0 of val chooses epochs; fold 1 is kept for the compression gate.
    val_fold = has_column(pre / "split=val", FOLD)
    val_loader = ArrowLoader(pre / "split=val", [*inputs, target, *([FOLD] if val_fold else [])],
                             rank, world, batch_size * 4, seed, shuffle=False)

    full_numel = sum(p.numel() for p in model.parameters())
    wrapped: torch.nn.Module
    if fsdp:
        _shard(model)
        wrapped = model
    elif world > 1:
        wrapped = DDP(model, device_ids=[device.index] if use_cuda else None)
    else:
        wrapped = model
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=float(params["lr"]),
                            weight_decay=float(params["weight_decay"]))
    steps_per_epoch = len(loader)
    if params.get("max_steps_per_epoch"):
        steps_per_epoch = min(steps_per_epoch, int(params["max_steps_per_epoch"]))
    if steps_per_epoch < 1:
        raise RuntimeError(f"{pre / 'split=train'} holds no rows; nothing to train on")
    opt_steps_per_epoch = math.ceil(steps_per_epoch / accum)
    total = opt_steps_per_epoch * epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(total, int(total * float(params["warmup_ratio"]))))

    start_epoch, best, bad_epochs = 0, -math.inf, 0
    history: list[dict[str, Any]] = []
    select_by = str(params.get("select_by", "loss"))
    kept: dict[str, Any] | None = None
    if resume_dir is not None:
        if fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_optimizer_state_dict,
            )
            set_optimizer_state_dict(model, opt, state["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        else:
            opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        saved_rngs = state.get("rng", [])
        if len(saved_rngs) == world:
            _set_rng_state(saved_rngs[rank])
        else:  # another world size: a fresh, still deterministic, stream per rank
            _seed_all(seed + 1_000_003 * rank + int(state["epoch"]) + 1)
        start_epoch, best = int(state["epoch"]) + 1, float(state["best"])
        bad_epochs = int(state["bad_epochs"])
        history = list(state.get("history", []))
        kept = next((r for r in history if r["epoch"] == state.get("kept_epoch")), None)
        if rank == 0:
            print(f"[sparkforge] resuming after epoch {start_epoch - 1} from {resume_dir}",
                  flush=True)
        if bad_epochs >= int(params["patience"]):  # it had stopped early: nothing to resume
            start_epoch = epochs

    weight = (torch.tensor(params["class_weights"], dtype=torch.float32, device=device)
              if params.get("class_weights") else None)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if use_cuda else None
    grad_clip = float(params["grad_clip"])

    def all_reduce(t: Any, op: Any = None) -> Any:
        """Sum (or ``op``) a small CPU tensor over the ranks (NCCL wants it on the GPU)."""
        if world == 1:
            return t
        on = t.to(device)
        dist.all_reduce(on, op=op or dist.ReduceOp.SUM)
        return on.cpu()

    def to_t(batch: dict[str, np.ndarray]) -> list[Any]:
        return [torch.from_numpy(np.ascontiguousarray(batch[k])).to(device) for k in inputs]

    def forward(net: torch.nn.Module, xs: list[Any]) -> Any:
        if amp is None:
            return net(*xs)
        with amp:
            return net(*xs).float()

    # Regression: the model predicts in the target's units (its last layer maps back from
    # the standardised scale), and the loss is taken on the standardised scale, so the
    # same learning rate works for targets in units, thousands or millions.
    target_var = float(params.get("target_std") or 1.0) ** 2

    def loss_of(out: Any, y: Any, reduction: str = "mean") -> Any:
        if regression:
            return torch.nn.functional.mse_loss(out.squeeze(-1), y.float(),
                                                reduction=reduction) / target_var
        return classification_loss(out, y, weight, reduction)

    def sync_grads(last: bool) -> Any:
        if fsdp:
            model.set_requires_gradient_sync(last)  # type: ignore[operator]
            return contextlib.nullcontext()
        if world > 1 and not last:
            return wrapped.no_sync()  # type: ignore[operator]
        return contextlib.nullcontext()

    def evaluate() -> dict[str, Any]:
        # Every rank scores its share of val (FSDP needs all ranks in each forward).
        net = wrapped if fsdp else model
        net.eval()
        sums = torch.zeros(4, dtype=torch.float64)  # loss, correct, squared error, rows
        with torch.no_grad():
            for raw in val_loader.epoch(0):
                b = trim_padding(raw)
                chosen = ~b[PAD_KEY]
                if val_fold:
                    chosen &= b[FOLD] == SELECT_FOLD
                keep = torch.from_numpy(chosen).to(device)
                out = forward(net, to_t(b)).float()
                y = torch.from_numpy(b[target]).to(device)
                # Class-weighted like the training loss, so the kept epoch is the best by
                # the objective trained on (the val rows' summed weight is the same every
                # epoch, so dividing by rows below ranks epochs as the weighted mean would).
                per_row = (torch.nn.functional.mse_loss(out.squeeze(-1), y.float(),
                                                        reduction="none") if regression
                           else classification_loss(out, y, weight, reduction="none"))
                sums[0] += float(per_row[keep].sum()) / (target_var if regression else 1.0)
                sums[3] += float(keep.sum())
                if regression:
                    sums[2] += float(per_row[keep].sum())
                else:
                    sums[1] += float((out.argmax(-1) == y)[keep].sum())
        sums = all_reduce(sums)
        net.train()
        n = float(sums[3])
        name = "val_neg_rmse" if regression else "val_accuracy"
        if n == 0:
            return {"val_loss": float("nan"), "val_metric": float("nan"), "metric_name": name,
                    "val_rows": 0}
        metric = -math.sqrt(float(sums[2]) / n) if regression else float(sums[1]) / n
        return {"val_loss": float(sums[0]) / n, "val_metric": metric, "metric_name": name,
                "val_rows": int(n)}

    def gather_state() -> tuple[dict[str, Any], dict[str, Any]]:
        """Full weights and optimizer state on rank 0 ({} elsewhere); collective under FSDP."""
        if fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
                get_optimizer_state_dict,
            )
            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return (get_model_state_dict(model, options=opts),
                    get_optimizer_state_dict(model, opt, options=opts))
        if rank != 0:
            return {}, {}
        return dict(model.state_dict()), opt.state_dict()

    def save_best(weights: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        model_dir.mkdir(parents=True, exist_ok=True)
        tmp = model_dir / f".{BEST_WEIGHTS}.tmp-{os.getpid()}"
        save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp))
        tmp.replace(model_dir / BEST_WEIGHTS)

    stop = False
    resumed_from = start_epoch if resume_dir is not None else None
    t_start = time.time()
    for epoch in range(start_epoch, epochs):
        wrapped.train()
        t0, seen, loss_sum, steps = time.time(), 0, 0.0, 0
        traced: list[Any] = []
        traced_pad = 0
        opt.zero_grad(set_to_none=True)
        for step, raw in enumerate(loader.epoch(epoch)):
            if step >= steps_per_epoch:
                break
            _maybe_fail(params, rank, epoch, step)
            if trace_dir is not None:
                traced.extend(raw[trace_col].tolist())
                traced_pad += int(raw[PAD_KEY].sum())
            group_start = (step // accum) * accum
            in_group = min(accum, steps_per_epoch - group_start)
            last = step - group_start == in_group - 1
            batch = trim_padding(raw)
            y = torch.from_numpy(batch[target]).to(device)
            with sync_grads(last):
                loss = loss_of(forward(wrapped, to_t(batch)), y)
                (loss / in_group).backward()
            if last:
                if grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(trainable, grad_clip)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            loss_sum += float(loss.detach()) * len(y)
            seen += len(y)
            steps += 1
        if trace_dir is not None:
            trace_dir.mkdir(parents=True, exist_ok=True)
            (trace_dir / f"epoch{epoch}-rank{rank}.json").write_text(
                json.dumps({"ids": traced, "pad_rows": traced_pad, "steps": steps}))
        stats = all_reduce(torch.tensor([loss_sum, float(seen)], dtype=torch.float64))
        elapsed = time.time() - t0
        total_loss, total_seen = float(stats[0]), float(stats[1])
        record: dict[str, Any] = {"epoch": epoch,
                                  "train_loss": total_loss / max(total_seen, 1.0),
                                  "samples_per_s": total_seen / max(elapsed, 1e-9),
                                  "epoch_s": elapsed, "steps": steps,
                                  "samples": int(total_seen),
                                  "lr": float(sched.get_last_lr()[0])}
        record.update(evaluate())
        if math.isnan(record["val_metric"]):  # no val rows: early-stop on the train loss
            record["val_metric"], record["metric_name"] = -record["train_loss"], "neg_train_loss"
        weights, optim = gather_state()
        rngs: list[Any] = [None] * world
        if world > 1:
            dist.all_gather_object(rngs, _rng_state())
        else:
            rngs = [_rng_state()]
        if rank == 0:
            score = selection_score(record, select_by)
            record["selection_score"] = score
            if score >= best:
                # Ties go to the later epoch: it has seen more data for the same score.
                bad_epochs = 0 if score > best else bad_epochs + 1
                best, kept = score, record
                save_best(weights)
            else:
                bad_epochs += 1
            record["elapsed_s"] = time.time() - t_start
            history.append(record)
            checkpoint.save(ckpt_root, epoch, weights, {
                "optimizer": optim, "scheduler": sched.state_dict(), "rng": rngs,
                "epoch": epoch, "best": best, "bad_epochs": bad_epochs, "history": history,
                "kept_epoch": kept["epoch"] if kept else None,
                "fsdp": fsdp, "world": world, "spec": dict(params["spec"])})
            stop = bad_epochs >= int(params["patience"])
            print(f"[sparkforge] epoch {epoch}: train_loss={record['train_loss']:.4f} "
                  f"val_loss={record['val_loss']:.4f} {record['metric_name']}="
                  f"{record['val_metric']:.4f} samples/s={record['samples_per_s']:.1f} "
                  f"elapsed={record['elapsed_s']:.1f}s", flush=True)
        del weights, optim
        # Rank 0 decided; MAX over ranks hands its decision to all of them.
        stop = bool(all_reduce(torch.tensor([1 if stop else 0]), dist.ReduceOp.MAX).item())
        if stop:
            break

    numel = [_local_numel(model)]
    if world > 1:
        numel = [0] * world
        dist.all_gather_object(numel, _local_numel(model))
    if history and history[-1]["epoch"] < epochs - 1:
        stop_reason = (f"early stopping: no better validation {select_by} for "
                       f"{params['patience']} epochs")
    else:
        stop_reason = f"reached train.epochs={epochs}"
    return finish_rank({
        "history": history, "best_val_metric": kept["val_metric"] if kept else best,
        "kept_epoch": kept["epoch"] if kept else None,
        "kept_reason": (f"best validation {select_by} (fold {SELECT_FOLD} of val; ties to the "
                        "later epoch)"),
        "stop_reason": stop_reason, "select_by": select_by,
        "resumed_from_epoch": resumed_from,
        "steps_per_epoch": steps_per_epoch, "world_size": world, "fsdp": fsdp,
        "loader": params.get("loader", "arrow"), "grad_accum_steps": accum,
        "param_numel": full_numel, "param_numel_per_rank": numel,
        "train_s": time.time() - t_launch,
    }, world)
