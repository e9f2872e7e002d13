"""Issue 13's GPU checks as single processes: no Java, no Spark, the training and scoring
cores run directly (a GPU box with CUDA torch, pyarrow and safetensors is enough).

Here, with the venv: a bundle of at most 64 MiB that travels with the device call (the
preprocessed train and validation rows of a text run, the model spec, its starting weights
in fp16):

    .venv/bin/python -m benchmarks.bench_gpu bundle --run runs/demo_text --out .gpu-bundle

There, with ``lib`` on ``PYTHONPATH`` and the bundle carried (``make bench-gpu`` runs both
on one machine):

    PYTHONPATH=lib python -m benchmarks.bench_gpu run --bundle .gpu-bundle --out gpu.json

``run`` measures on the GPU when torch sees one, else on the CPU (what CI's smoke test does):

1. loader: ``Trainer`` (the training core: its Arrow loader reads the bundle's Parquet,
   pinned non-blocking copies, bf16 autocast, fused AdamW) against the same model,
   optimizer and autocast stepping over the same batches held as tensors on the device.
   samples/s at each ``--loader-batch`` (16 and 64). Goal: loader >= 0.95x memory.
2. fine-tune: two epochs of ``Trainer`` at ``--batch`` (256) from the bundle's weights,
   eager and with ``train.compile``: the second epoch's samples/s (the first one compiles
   and warms up) and the validation accuracy after it. Goal: 15,000 samples/s on one
   H100-class GPU at sequence length <= 64, at the eager run's accuracy.
3. scoring: the torch backend (``TorchBackend``: bf16 autocast on a GPU) over the
   validation rows in ``--score-batch`` rows a call: rows/s.

Each measurement repeats ``--repeat`` times (median and range). The results go to
``--out`` as JSON and to stdout as a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

COLUMNS = ["input_ids", "attention_mask", "label_index"]
BUNDLE_LIMIT = 64 * 2**20  # what a device call carries
PY_DIR = "py"  # pure-Python packages the bundle carries


def make_bundle(run: Path, out: Path, rows: int, spec: dict[str, Any] | None = None) -> Path:
    """The bundle of ``run`` (a text run's ``preprocessed/`` and ``model/model.json``):
    train and val Parquet (the model's columns, at most ``rows`` each), ``model.json``
    (not pretrained: the weights come from the bundle) and ``model.safetensors`` (the
    starting weights, fp16). ``spec``: another model instead of the run's (tests)."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq
    import torch

    from sparkforge.data.prepare import FOLD
    from sparkforge.models import build_model, save_weights

    spec = dict(spec or json.loads((run / "model" / "model.json").read_text()))
    torch.manual_seed(0)
    model = build_model(spec)  # pretrained MiniLM: the package's weights, a fresh head
    if spec.get("name") == "minilm":
        spec["pretrained"] = False
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        d = ds.dataset(run / "preprocessed" / f"split={split}", format="parquet")
        cols = COLUMNS + ([FOLD] if split == "val" and FOLD in d.schema.names else [])
        table = d.head(rows, columns=cols)
        (out / split).mkdir(exist_ok=True)
        pq.write_table(table, out / split / "part-0.parquet", compression="zstd")
    (out / "model.json").write_text(json.dumps(spec, sort_keys=True))
    # sparkforge imports PyYAML (its config), which a bare GPU image may lack: its
    # pure-Python package travels too (``run`` appends it to sys.path; an installed
    # one wins, and without its C extension PyYAML falls back to Python).
    import yaml

    shutil.copytree(Path(yaml.__file__).parent, out / PY_DIR / "yaml", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    save_weights(model.half(), out / "model.safetensors")  # fp16: MiniLM in 45 MB
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    if size > BUNDLE_LIMIT:
        raise SystemExit(f"the bundle is {size / 2**20:.1f} MiB, over the 64 MiB a device "
                         "call carries; lower --rows")
    print(f"bundle {out}: {size / 2**20:.1f} MiB", flush=True)
    return out


def _model(bundle: Path, device: Any) -> Any:
    """The bundle's model with its weights (fp16 on disk, the module's dtype in memory)."""
    from sparkforge.models import build_model, load_weights

    model = build_model(json.loads((bundle / "model.json").read_text()))
    return load_weights(model, bundle / "model.safetensors").to(device)


def _spec(bundle: Path, work: Path, *, batch: int, steps: int, compile_: bool,
          cuda: bool, lr: float, epochs: int = 1) -> Any:
    from sparkforge.train.spec import TrainSpec

    return TrainSpec(
        model=json.loads((bundle / "model.json").read_text()),
        inputs=("input_ids", "attention_mask"), target="label_index",
        train_path=str(bundle / "train"), val_path=str(bundle / "val"), out_dir=str(work),
        checkpoint=False, epochs=epochs, batch_size=batch, lr=lr, warmup_ratio=0.06,
        max_steps_per_epoch=steps, seed=42, use_cuda=cuda, compile=compile_, name="bench")


def _fit(bundle: Path, device: Any, **kw: Any) -> dict[str, Any]:
    """``Trainer`` from the bundle's weights (one epoch unless ``epochs``): the last
    epoch's history record."""
    from sparkforge.train.loop import Trainer

    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as work:
        spec = _spec(bundle, Path(work), cuda=device.type == "cuda", **kw)
        result = Trainer(spec, model=_model(bundle, device)).fit()
    rec: dict[str, Any] = result["history"][-1]
    return rec


def _memory_rate(bundle: Path, device: Any, batch: int, steps: int, lr: float) -> float:
    """samples/s of the training step alone: the same model, fused AdamW (GPU), bf16
    autocast (GPU), loss and clipping as ``Trainer``, over the loader's first ``steps``
    batches of epoch 0 held as tensors on the device."""
    import numpy as np
    import torch

    from sparkforge.train.loader import ArrowLoader, trim_padding

    cuda = device.type == "cuda"
    loader = ArrowLoader(bundle / "train", COLUMNS, 0, 1, batch, seed=42)
    held = []
    for i, raw in enumerate(loader.epoch(0)):
        if i >= steps:
            break
        b = trim_padding(raw)
        held.append([torch.from_numpy(np.ascontiguousarray(b[k])).to(device) for k in COLUMNS])
    model = _model(bundle, device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, fused=True if cuda else None)

    def step(ids: Any, mask: Any, y: Any) -> Any:
        if cuda:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(ids, mask).float()
        else:
            out = model(ids, mask)
        loss = torch.nn.functional.cross_entropy(out, y.long())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    # No warm-up steps: a Trainer epoch's rate counts its first steps too (both sides run
    # in a process that has already trained, so CUDA and its kernels are loaded).
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    last = None
    for tensors in held:
        last = step(*tensors)
    if last is not None:
        float(last)  # waits for the device
    return sum(len(t[-1]) for t in held) / (time.perf_counter() - t0)


def _score_rate(bundle: Path, batch: int) -> tuple[float, int]:
    """(rows/s, rows) of the torch backend over the validation rows, ``batch`` a call."""
    import pyarrow.parquet as pq
    import torch

    from sparkforge.artifacts import sha256_file
    from sparkforge.infer import ModelRef, Predictor, TorchBackend

    weights = bundle / "model.safetensors"  # fp16, loaded into the module's fp32
    ref = ModelRef(str(weights), sha256_file(weights), threads=torch.get_num_threads(),
                   format="torch",
                   spec=(bundle / "model.json").read_text())
    predictor = Predictor(TorchBackend.load(ref), ["input_ids", "attention_mask"], batch)
    table = pq.read_table(bundle / "val", columns=COLUMNS[:2])
    batches = table.to_batches(max_chunksize=batch)
    predictor.predict(batches[0])  # warm-up
    t0 = time.perf_counter()
    for b in batches:
        predictor.predict(b)  # returns numpy: waits for the device
    return table.num_rows / (time.perf_counter() - t0), table.num_rows


def _summary(xs: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs}


def run(bundle: Path, *, loader_batches: list[int], loader_steps: int, batch: int,
        lr: float, score_batch: int, repeat: int, fine_tune_steps: int,
        eager_only: bool = False) -> dict[str, Any]:
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    res: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "bundle": str(bundle), "loader": {}, "fine_tune": {}}
    print(f"device {res['device']}, torch {res['torch']}", flush=True)
    for b in loader_batches:
        _fit(bundle, device, batch=b, steps=4, compile_=False, lr=lr)  # warm-up
        trainer, memory = [], []
        for r in range(repeat):
            sides = ("trainer", "memory") if r % 2 == 0 else ("memory", "trainer")
            for side in sides:
                if side == "trainer":
                    trainer.append(_fit(bundle, device, batch=b, steps=loader_steps,
                                        compile_=False, lr=lr)["samples_per_s"])
                else:
                    memory.append(_memory_rate(bundle, device, b, loader_steps, lr))
        ratio = statistics.median(trainer) / statistics.median(memory)
        res["loader"][str(b)] = {"trainer": _summary(trainer), "memory": _summary(memory),
                                 "ratio": ratio}
        print(f"batch {b}: Trainer {statistics.median(trainer):,.0f} samples/s, in memory "
              f"{statistics.median(memory):,.0f}: {ratio:.2f}x", flush=True)
    for compiled in (False, True)[:1 if eager_only else 2]:
        kind = "compiled" if compiled else "eager"
        recs = [_fit(bundle, device, batch=batch, steps=fine_tune_steps, compile_=compiled,
                     lr=lr, epochs=2) for _ in range(repeat)]
        res["fine_tune"][kind] = {
            "samples_per_s": _summary([r["samples_per_s"] for r in recs]),
            "val_metric": _summary([r["val_metric"] for r in recs]),
            "samples": recs[0]["samples"], "val_rows": recs[0]["val_rows"]}
        print(f"fine-tune batch {batch} {kind}, 2nd epoch: "
              f"{res['fine_tune'][kind]['samples_per_s']['median']:,.0f} samples/s, val "
              f"accuracy {res['fine_tune'][kind]['val_metric']['median']:.4f}", flush=True)
    rates = []
    for _ in range(repeat):
        rate, n = _score_rate(bundle, score_batch)
        rates.append(rate)
    res["score"] = {"rows": n, "batch": score_batch, "rows_per_s": _summary(rates)}
    print(f"torch backend scoring: {statistics.median(rates):,.0f} rows/s", flush=True)
    return res


def markdown(res: dict[str, Any], command: str) -> str:
    lines = ["## GPU", "", f"- device: {res['device']}, torch {res['torch']}", "",
             "```bash", command, "```", "",
             "| check | figure | goal |", "|---|---|---|"]
    for b, r in res["loader"].items():
        lines.append(f"| loader, batch {b}: `Trainer` / in-memory tensors | "
                     f"{r['trainer']['median']:,.0f} / {r['memory']['median']:,.0f} "
                     f"samples/s = **{r['ratio']:.2f}x** | >= 0.95x |")
    for kind, r in res["fine_tune"].items():
        rate, acc = r["samples_per_s"], r["val_metric"]
        lines.append(f"| fine-tune, 2nd epoch, {kind} | {rate['median']:,.0f} samples/s "
                     f"({rate['min']:,.0f}-{rate['max']:,.0f}), val accuracy "
                     f"{acc['median']:.4f} ({acc['min']:.4f}-{acc['max']:.4f}) | "
                     "15,000 samples/s |")
    s = res["score"]
    lines.append(f"| torch backend scoring, {s['rows']:,} rows, {s['batch']} a call | "
                 f"{s['rows_per_s']['median']:,.0f} rows/s | recorded |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bundle", help="write the bundle a device call carries")
    b.add_argument("--run", type=Path, required=True, help="a text run directory")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--rows", type=int, default=20_000, help="rows of each split, at most")
    b.add_argument("--model-spec", default="", help="JSON: a model instead of the run's")
    r = sub.add_parser("run", help="measure, on the GPU when there is one")
    r.add_argument("--bundle", type=Path, required=True)
    r.add_argument("--out", type=Path, default=None, help="JSON results (and a .md beside)")
    r.add_argument("--loader-batch", type=int, nargs="+", default=[16, 64])
    r.add_argument("--loader-steps", type=int, default=100)
    r.add_argument("--batch", type=int, default=256, help="the fine-tune's batch")
    r.add_argument("--fine-tune-steps", type=int, default=0, help="0: the whole epoch")
    r.add_argument("--lr", type=float, default=5e-5)
    r.add_argument("--score-batch", type=int, default=256)
    r.add_argument("--repeat", type=int, default=5)
    r.add_argument("--eager-only", action="store_true",
                   help="skip the compiled fine-tune (minutes of compiling on a CPU)")
    args = p.parse_args(argv)
    if args.cmd == "bundle":
        if args.rows < 1:
            p.error("--rows must be >= 1")
        if not (args.run / "preprocessed").is_dir():
            p.error(f"--run {args.run}: no preprocessed/ there; give a text run directory "
                    "(make demo-text writes runs/demo_text)")
        make_bundle(args.run, args.out, args.rows,
                    json.loads(args.model_spec) if args.model_spec else None)
        return {}
    if not (args.bundle / "model.json").is_file():
        p.error(f"--bundle {args.bundle}: no model.json there; write one with "
                "`python -m benchmarks.bench_gpu bundle`")
    sys.path.append(str(args.bundle / PY_DIR))
    if min([*args.loader_batch, args.loader_steps, args.batch, args.repeat,
            args.score_batch]) < 1 or args.fine_tune_steps < 0:
        p.error("batches, steps and --repeat must be >= 1 (--fine-tune-steps >= 0)")
    res = run(args.bundle, loader_batches=args.loader_batch, loader_steps=args.loader_steps,
              batch=args.batch, lr=args.lr, score_batch=args.score_batch,
              repeat=args.repeat, fine_tune_steps=args.fine_tune_steps,
              eager_only=args.eager_only)
    md = markdown(res, "python -m benchmarks.bench_gpu " + " ".join(
        argv if argv is not None else sys.argv[1:]))
    print(md)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1))
        args.out.with_suffix(".md").write_text(md)
    return res


if __name__ == "__main__":
    main()
