"""The training core: one :class:`Trainer` that training, distillation and the pruning
fine-tune all run, configured by a :class:`~sparkforge.train.spec.TrainSpec`.

:func:`train_rank` is what every rank runs (under TorchDistributor, torchrun, or alone):
pure torch, DDP (or FSDP2 with ``spec.fsdp``) on gloo (CPU) or NCCL (GPU), AdamW with
linear warmup + linear decay (torch's ``LambdaLR``; see :func:`make_scheduler`),
gradient clipping and accumulation, the spec's pluggable loss, bf16 autocast on GPU,
validation on every rank's share of the val split (fold ``spec.val_fold``), model
selection by validation loss or metric (ties to the later epoch), early stopping, and a
checkpoint after every epoch (see :mod:`sparkforge.train.checkpoint`) that
``spec.resume`` continues from. Artifacts are written by rank 0 only; every rank returns
the same value (rank 0's, broadcast), because with ``local_mode=True`` TorchDistributor
returns whichever rank finished last.

The pruning fine-tune runs the same :class:`Trainer` in the driver process on rows held
in memory (``Trainer(spec, model=..., train_data=..., val_data=...)``, one rank, nothing
written, the best weights loaded back into the model).

Test hooks (killing a rank, tracing the rows each rank trained on) are not part of the
spec: see :mod:`sparkforge.train.hooks`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sparkforge.train import checkpoint, hooks
from sparkforge.train.losses import classification_loss
from sparkforge.train.spec import TrainSpec

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


def make_scheduler(opt: Any, total_steps: int, warmup_steps: int) -> Any:
    """Linear warmup over ``warmup_steps`` optimizer steps (factor (s+1)/warmup), then
    linear decay to 0 at ``total_steps``.

    torch's ``LambdaLR`` over a plain function, not ``SequentialLR(LinearLR, LinearLR)``:
    those save their lengths in the checkpoint, so a run resumed with more
    ``train.epochs`` would keep the old schedule (and one whose warmup rounded to 0
    steps would not load at all); ``LambdaLR`` saves only the step reached, and the
    resumed run follows the schedule of its own length."""
    from torch.optim.lr_scheduler import LambdaLR

    return LambdaLR(opt, _lr_lambda(total_steps, warmup_steps))


def selection_score(record: Mapping[str, Any], select_by: str) -> float:
    """Higher is better: -validation loss, or the validation metric (accuracy / -RMSE);
    the training loss stands in when validation fold 0 has no rows, and a record with
    neither (the starting point of a fine-tune without validation rows) is -inf."""
    if select_by == "metric":
        metric = float(record["val_metric"])
        return -math.inf if math.isnan(metric) else metric
    loss = float(record["val_loss"])
    if math.isnan(loss):
        loss = float(record.get("train_loss", math.nan))
    return -math.inf if math.isnan(loss) else -loss


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


def setup_rank(spec: TrainSpec) -> tuple[int, int, Any, bool]:
    """Per-rank start: (rank, world, device, use_cuda) from torchrun's environment;
    pins the GPU, sets torch threads (``spec.threads``; 0 leaves them) and joins the
    process group (NCCL on GPU, gloo on CPU)."""
    import torch
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = bool(spec.use_cuda) and torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if spec.threads:
        torch.set_num_threads(int(spec.threads))
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


class Trainer:
    """One training run of one rank: build, (resume,) train, validate, select, checkpoint.

    ``model``: train this module (in place) instead of building ``spec.model``;
    ``train_data`` / ``val_data``: rows in memory instead of ``spec.train_path`` /
    ``spec.val_path`` (one rank; the pruning fine-tune on the driver).
    """

    def __init__(self, spec: TrainSpec, *, model: Any = None,
                 train_data: Mapping[str, np.ndarray] | None = None,
                 val_data: Mapping[str, np.ndarray] | None = None) -> None:
        self.spec = spec
        self._model = model
        self._train_data = train_data
        self._val_data = val_data

    # -- data ---------------------------------------------------------------------------

    def _loaders(self, rank: int, world: int, trace: list[str]) -> tuple[Any, Any, bool]:
        """(train loader, val loader, whether val batches carry the fold column)."""
        from sparkforge.data.prepare import FOLD
        from sparkforge.train.loader import ArrowLoader, ShardedLoader, has_column, make_loader

        s = self.spec
        if self._train_data is not None:
            train: Any = ShardedLoader(dict(self._train_data), rank, world, s.batch_size, s.seed)
        else:
            if s.train_path is None and s.loader == "arrow":
                raise ValueError("TrainSpec.train_path is None and no rows were given")
            train = make_loader(s.loader, columns=[*s.columns(), *trace], rank=rank,
                                world=world, batch_size=s.batch_size, seed=s.seed,
                                path=Path(s.train_path) if s.train_path else None,
                                converter=s.converter)
        cols = [*s.inputs, s.target]
        if self._val_data is not None:
            data = dict(self._val_data)
            folded = s.val_fold is not None and FOLD in data
            val: Any = ShardedLoader(data, rank, world, s.batch_size * 4, s.seed, shuffle=False)
        elif s.val_path is not None:
            folded = s.val_fold is not None and has_column(Path(s.val_path), FOLD)
            val = ArrowLoader(Path(s.val_path), [*cols, *([FOLD] if folded else [])], rank,
                              world, s.batch_size * 4, s.seed, shuffle=False)
        else:
            folded, val = False, ShardedLoader({}, rank, world, s.batch_size * 4, s.seed)
        return train, val, folded

    # -- the run --------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        import torch
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel as DDP

        from sparkforge.data.prepare import FOLD
        from sparkforge.models import build_model
        from sparkforge.train.loader import PAD_KEY, trim_padding

        s = self.spec
        rank, world, device, use_cuda = setup_rank(s)
        t_launch = time.time()
        # Rank processes stream stdout to the driver; in the driver itself, log instead.
        in_rank = "RANK" in os.environ

        def say(msg: str) -> None:
            if in_rank:
                print(f"[sparkforge] {msg}", flush=True)
            else:
                log.info("%s", msg)

        seed, fsdp, regression = int(s.seed), bool(s.fsdp), bool(s.regression)
        inputs, target = list(s.inputs), s.target
        out_dir = Path(s.out_dir) if s.out_dir else None
        ckpt_root = out_dir / CHECKPOINT_DIR if out_dir and s.checkpoint else None
        epochs, accum = int(s.epochs), int(s.grad_accum_steps)
        hk = hooks.active()
        tracer = hooks.Tracer(hk, rank)

        # Same seed on every rank for the model build: FSDP shards each rank's own copy.
        _seed_all(seed)
        model = self._model if self._model is not None else build_model(dict(s.model))
        resume_dir = checkpoint.latest(ckpt_root) if ckpt_root and s.resume else None
        state: dict[str, Any] = {}
        if resume_dir is not None:
            weights, state = checkpoint.load(resume_dir)
            if bool(state.get("fsdp")) != fsdp:
                raise RuntimeError(f"{resume_dir} was written with train.fsdp="
                                   f"{state.get('fsdp')}; resume with the same setting (or "
                                   "train.resume=false)")
            model.load_state_dict(weights, strict=True)
        model.to(device)
        _seed_all(seed + 1_000_003 * rank)  # dropout differs across ranks

        loader, val_loader, val_folded = self._loaders(rank, world, tracer_cols(hk))
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
        # On a GPU, fused AdamW: one kernel updates every parameter, where the default
        # launches several per tensor and leaves a small model's GPU waiting on them.
        # (FSDP's sharded parameters keep the default.)
        opt = torch.optim.AdamW(trainable, lr=float(s.lr), weight_decay=float(s.weight_decay),
                                fused=True if use_cuda and not fsdp else None)
        # spec.compile: the training forward and backward through torch.compile (the first
        # steps compile; evaluation and the saved weights use the module as it is).
        step_net: Any = torch.compile(wrapped) if s.compile else wrapped
        steps_per_epoch = len(loader)
        if s.max_steps_per_epoch:
            steps_per_epoch = min(steps_per_epoch, int(s.max_steps_per_epoch))
        if steps_per_epoch < 1:
            raise RuntimeError(f"{s.train_path or 'the training rows'} holds no rows; nothing "
                               "to train on")
        total = math.ceil(steps_per_epoch / accum) * epochs
        sched = make_scheduler(opt, total, int(total * float(s.warmup_ratio)))

        start_epoch, best, bad_epochs = 0, -math.inf, 0
        history: list[dict[str, Any]] = []
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
                say(f"resuming after epoch {start_epoch - 1} from {resume_dir}")
            if bad_epochs >= int(s.patience):  # it had stopped early: nothing to resume
                start_epoch = epochs

        loss_fn = s.loss.bind(s, device)
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if use_cuda else None
        grad_clip = float(s.grad_clip)
        target_var = float(s.target_std or 1.0) ** 2
        extra_cols = list(s.loss.columns)

        def all_reduce(t: Any, op: Any = None) -> Any:
            """Sum (or ``op``) a small CPU tensor over the ranks (NCCL wants it on the GPU)."""
            if world == 1:
                return t
            on = t.to(device)
            dist.all_reduce(on, op=op or dist.ReduceOp.SUM)
            return on.cpu()

        def to_t(batch: Mapping[str, np.ndarray], keys: list[str]) -> list[Any]:
            # Pinned host memory lets the copy to the GPU run asynchronously; on CPU the
            # tensors are used where they are.
            out = []
            for k in keys:
                t = torch.from_numpy(np.ascontiguousarray(batch[k]))
                if use_cuda:
                    t = t.pin_memory().to(device, non_blocking=True)
                out.append(t)
            return out

        def forward(net: torch.nn.Module, xs: list[Any]) -> Any:
            if amp is None:
                return net(*xs)
            with amp:
                return net(*xs).float()

        def sync_grads(last: bool) -> Any:
            if fsdp:
                model.set_requires_gradient_sync(last)  # type: ignore[operator]
                return contextlib.nullcontext()
            if world > 1 and not last:
                return wrapped.no_sync()  # type: ignore[operator]
            return contextlib.nullcontext()

        def evaluate() -> dict[str, Any]:
            # Every rank scores its share of val (FSDP needs all ranks in each forward).
            # The validation loss is the label loss, class-weighted like training
            # (``spec.class_weights``), whatever else the training objective adds
            # (distillation's soft labels): it is what selects the epoch. The val rows'
            # summed weight is the same every epoch, so dividing by rows below ranks
            # epochs as the weighted mean would.
            net = wrapped if fsdp else model
            net.eval()
            sums = torch.zeros(4, dtype=torch.float64)  # loss, correct, squared error, rows
            with torch.no_grad():
                for raw in val_loader.epoch(0):
                    b = trim_padding(raw)
                    n_rows = len(b[target])
                    chosen = ~b[PAD_KEY] if PAD_KEY in b else np.ones(n_rows, dtype=bool)
                    if val_folded:
                        chosen &= b[FOLD] == s.val_fold
                    keep = torch.from_numpy(chosen).to(device)
                    out = forward(net, to_t(b, inputs)).float()
                    (y,) = to_t(b, [target])
                    per_row = (torch.nn.functional.mse_loss(out.squeeze(-1), y.float(),
                                                            reduction="none") if regression
                               else classification_loss(out, y, s.class_weights,
                                                        reduction="none"))
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
                return {"val_loss": float("nan"), "val_metric": float("nan"),
                        "metric_name": name, "val_rows": 0}
            metric = -math.sqrt(float(sums[2]) / n) if regression else float(sums[1]) / n
            return {"val_loss": float(sums[0]) / n, "val_metric": metric, "metric_name": name,
                    "val_rows": int(n)}

        def gather_state(with_optimizer: bool) -> tuple[dict[str, Any], dict[str, Any]]:
            """Full weights (and optimizer state) on rank 0 ({} elsewhere); collective
            under FSDP."""
            if fsdp:
                from torch.distributed.checkpoint.state_dict import (
                    StateDictOptions,
                    get_model_state_dict,
                    get_optimizer_state_dict,
                )
                opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
                return (get_model_state_dict(model, options=opts),
                        get_optimizer_state_dict(model, opt, options=opts)
                        if with_optimizer else {})
            if rank != 0:
                return {}, {}
            return dict(model.state_dict()), opt.state_dict() if with_optimizer else {}

        best_in_memory: dict[str, Any] | None = None

        def save_best(weights: dict[str, Any]) -> None:
            nonlocal best_in_memory
            if out_dir is None:  # in-process: keep a copy, loaded back at the end
                best_in_memory = {k: v.detach().clone() for k, v in weights.items()}
                return
            from safetensors.torch import save_file

            out_dir.mkdir(parents=True, exist_ok=True)
            tmp = out_dir / f".{s.weights_name}.tmp-{os.getpid()}"
            save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp))
            tmp.replace(out_dir / s.weights_name)

        start_record: dict[str, Any] | None = None
        if s.keep_start and resume_dir is None:
            # The starting weights are a candidate too: a fine-tune that makes things
            # worse leaves the model as it was.
            start_record = {"epoch": -1, **evaluate()}
            start_weights, _ = gather_state(False)
            if rank == 0:
                best = selection_score(start_record, s.select_by)
                start_record["selection_score"] = best
                save_best(start_weights)
            del start_weights

        stop = False
        resumed_from = start_epoch if resume_dir is not None else None
        t_start = time.time()
        # A line at least every 30 s from rank 0 (epoch, step/total, samples/s, loss, ETA):
        # a long epoch is visible while it runs, not only at its end.
        progress = None
        if rank == 0 and start_epoch < epochs:
            from sparkforge.progress import ProgressReporter

            progress = ProgressReporter(
                epochs - start_epoch, steps_per_epoch, every_s=30.0,
                emit=lambda line: print(f"[sparkforge] {s.name}: {line}", flush=True))
        for epoch in range(start_epoch, epochs):
            wrapped.train()
            t0, seen, steps = time.time(), 0, 0
            # The loss is summed where it is computed and read for the epoch's figures and
            # the progress line (every 30 s): reading it every step (float()) would make
            # the host wait for the GPU each step, so the next batch could not be prepared
            # and copied while this one computes.
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            opt.zero_grad(set_to_none=True)
            for step, raw in enumerate(loader.epoch(epoch)):
                if step >= steps_per_epoch:
                    break
                hooks.maybe_fail(rank, epoch, step)
                tracer.batch(raw, PAD_KEY)
                group_start = (step // accum) * accum
                in_group = min(accum, steps_per_epoch - group_start)
                last = step - group_start == in_group - 1
                batch = trim_padding(raw)
                (y,) = to_t(batch, [target])
                extra = dict(zip(extra_cols, to_t(batch, extra_cols), strict=True))
                with sync_grads(last):
                    loss = loss_fn(forward(step_net, to_t(batch, inputs)), y, extra)
                    (loss / in_group).backward()
                if last:
                    if grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(trainable, grad_clip)
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                step_loss = loss.detach()
                loss_sum += step_loss.double() * len(y)
                seen += len(y)
                steps += 1
                if progress is not None:
                    progress.step(epoch - start_epoch, step, samples=len(y), loss=step_loss)
            tracer.epoch_end(epoch, steps)
            stats = all_reduce(torch.tensor([float(loss_sum), float(seen)],
                                            dtype=torch.float64))
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
                record["val_metric"] = -record["train_loss"]
                record["metric_name"] = "neg_train_loss"
            weights, optim = gather_state(ckpt_root is not None)
            rngs: list[Any] = [None] * world
            if ckpt_root is not None:
                if world > 1:
                    dist.all_gather_object(rngs, _rng_state())
                else:
                    rngs = [_rng_state()]
            if rank == 0:
                score = selection_score(record, s.select_by)
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
                if ckpt_root is not None:
                    checkpoint.save(ckpt_root, epoch, weights, {
                        "optimizer": optim, "scheduler": sched.state_dict(), "rng": rngs,
                        "epoch": epoch, "best": best, "bad_epochs": bad_epochs,
                        "history": history, "kept_epoch": kept["epoch"] if kept else None,
                        "fsdp": fsdp, "world": world, "spec": dict(s.model)})
                stop = bad_epochs >= int(s.patience)
                prefix = "" if s.name == "train" else f"{s.name} "
                say(f"{prefix}epoch {epoch}: train_loss={record['train_loss']:.4f} "
                    f"val_loss={record['val_loss']:.4f} {record['metric_name']}="
                    f"{record['val_metric']:.4f} samples/s={record['samples_per_s']:.1f} "
                    f"elapsed={record['elapsed_s']:.1f}s")
            del weights, optim
            # Rank 0 decided; MAX over ranks hands its decision to all of them.
            stop = bool(all_reduce(torch.tensor([1 if stop else 0]), dist.ReduceOp.MAX).item())
            if stop:
                break

        if out_dir is None and best_in_memory is not None:
            model.load_state_dict(best_in_memory)
        model.eval()
        numel = [_local_numel(model)]
        if world > 1:
            numel = [0] * world
            dist.all_gather_object(numel, _local_numel(model))
        if history and history[-1]["epoch"] < epochs - 1:
            stop_reason = (f"early stopping: no better validation {s.select_by} for "
                           f"{s.patience} epochs")
        else:
            stop_reason = f"reached train.epochs={epochs}"
        chosen = kept if kept is not None else start_record
        return finish_rank({
            "history": history,
            "best_val_metric": chosen["val_metric"] if chosen else best,
            "kept_epoch": chosen["epoch"] if chosen else None,
            "kept_reason": (f"best validation {s.select_by} (fold {s.val_fold} of val; ties "
                            "to the later epoch)" if s.val_fold is not None else
                            f"best validation {s.select_by} (ties to the later epoch)"),
            "stop_reason": stop_reason, "select_by": s.select_by,
            "resumed_from_epoch": resumed_from, "start": start_record,
            "val_rows": chosen.get("val_rows") if chosen else None,
            "steps_per_epoch": steps_per_epoch, "world_size": world, "fsdp": fsdp,
            "loader": s.loader if self._train_data is None else "memory",
            "grad_accum_steps": accum, "param_numel": full_numel,
            "param_numel_per_rank": numel, "train_s": time.time() - t_launch,
        }, world)


def tracer_cols(hk: hooks.TrainHooks | None) -> list[str]:
    return hk.trace_columns() if hk else []


def train_rank(spec: TrainSpec) -> dict[str, Any]:
    """What every TorchDistributor (or torchrun) rank runs: ``Trainer(spec).fit()``."""
    return Trainer(spec).fit()
