"""Training benchmarks, side by side in one run, on the preprocessed demo text.

    .venv/bin/python -m benchmarks.bench_train --run runs/demo_text [--repeat 3]
    .venv/bin/python -m benchmarks.bench_train --run runs/demo_text --only models

``--run`` is a run folder written by ``make demo-text`` (its ``preprocessed/`` and
``model/{labels,tokenizer}.json`` are read, never written; models go to a temp folder).

1. loader: embedding_bag (the fastest model, so the loader's worst case) trained in one
   process (1 torch thread, as each rank here) on the first ``--loader-batches`` batches
   of an epoch, fed by the ``arrow`` loader from Parquet vs by the very same batches
   prebuilt as torch tensors in memory. samples/s = rows through forward + backward +
   optimizer step / wall clock.
   Goal: loader >= 0.95x memory.
2. launch: one epoch of ``train_rank`` (2 ranks, gloo, 1 thread each) under
   ``TorchDistributor(local_mode=True)`` and ``local_mode=False`` vs the same function
   and params under plain ``torchrun --standalone --nproc_per_node=2``. Epoch time comes
   from each run's history; "start" is the launch's wall clock minus the time spent
   inside ``train_rank`` (process start, imports, pickling, rendezvous, result return).
   Goal: epoch time <= 1.05x torchrun's and a fixed start <= 15 s.
3. scaling: samples/s of 2 ranks (1 torch thread each) vs 1 rank (2 threads, and 1
   thread) under torchrun, for embedding_bag and MiniLM (steps per rank capped).
4. models (``--only models``, ~15 min): test accuracy (fp32, torch) on the demo split of
   embedding_bag and the small transformer trained from scratch for 5 epochs each, and
   of the MiniLM model already fine-tuned in ``--run`` (1 epoch, ``make demo-text``).

The sides of each comparison alternate so that load from other jobs on the machine falls
on both; the CPU used by other processes during each timed part is reported.
Results go to the "Training" section of ``BENCHMARKS.md`` (replaced on rerun).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks._common import machine, machine_cpu, write_section
from benchmarks._common import wait_quiet as _wait_quiet
from sparkforge.models import task_input_names

if TYPE_CHECKING:
    from sparkforge.train.spec import TrainSpec

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "## Training"
TEXT_INPUTS = task_input_names(text=True)  # the library names the model inputs once
TARGET = "label_index"


def versions() -> str:
    from importlib import metadata

    return ", ".join(f"{p} {metadata.version(p)}" for p in ("torch", "pyspark", "pyarrow"))


def own_cpu() -> float:
    """CPU seconds of this process (all threads) and of its reaped children."""
    import resource

    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


QUIET_WAIT = [60.0]  # seconds to wait for a quiet machine before each timed part


def wait_quiet() -> float:
    """Wait (at most QUIET_WAIT s) until other processes use < 0.3 cores."""
    return _wait_quiet(QUIET_WAIT[0], own_cpu, threshold=0.3)


class Timer:
    """Wall clock, own CPU, and the cores other processes used meanwhile.

    Own CPU counts this process's threads and its reaped children (torchrun ranks); the
    ranks of a barrier stage belong to Spark's Python workers and count as "others"."""

    def __enter__(self) -> Timer:
        wait_quiet()
        self.m0, self.c0, self.t0 = machine_cpu(), own_cpu(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.cpu = own_cpu() - self.c0
        self.others = max(0.0, (machine_cpu() - self.m0 - self.cpu) / max(self.seconds, 1e-9))


# --- params ------------------------------------------------------------------------------

def spec_for(run: Path, name: str, max_length: int = 64) -> dict[str, Any]:
    from tokenizers import Tokenizer

    labels = json.loads((run / "model" / "labels.json").read_text())
    spec: dict[str, Any] = {"name": name, "num_outputs": len(labels), "dropout": 0.1}
    if name == "minilm":
        return {**spec, "freeze_encoder": False, "pretrained": True}
    vocab = Tokenizer.from_file(str(run / "model" / "tokenizer.json")).get_vocab_size()
    spec.update(vocab_size=vocab, hidden_dim=128)
    if name == "transformer":
        spec.update(num_layers=2, num_heads=4, ffn_dim=512, max_length=max_length)
    return spec


def params_for(run: Path, model_dir: Path, name: str, *, epochs: int = 1, threads: int = 1,
               batch_size: int = 64, lr: float = 3e-3, max_steps: int = 0,
               patience: int = 3) -> TrainSpec:
    from sparkforge.train.spec import TrainSpec

    pre = (run / "preprocessed").resolve()
    return TrainSpec(
        model=spec_for(run, name), inputs=tuple(TEXT_INPUTS), target=TARGET,
        train_path=str(pre / "split=train"), val_path=str(pre / "split=val"),
        out_dir=str(model_dir), epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=0.01, warmup_ratio=0.06, grad_clip=1.0, seed=42, patience=patience,
        threads=threads, use_cuda=False, resume=False, max_steps_per_epoch=max_steps,
        grad_accum_steps=1, fsdp=False, loader="arrow")


def rank_entry(params_file: str, out_file: str) -> None:
    """What torchrun runs: train_rank on the pickled spec; rank 0 writes the result."""
    from sparkforge.train.loop import train_rank

    result = train_rank(pickle.loads(Path(params_file).read_bytes()))
    if os.environ.get("RANK", "0") == "0":
        Path(out_file).write_text(json.dumps(result, default=str))
    # The rank's work is done and written (train_rank left the process group). Skip the
    # interpreter's teardown: about 1 run in 130 on 2 cores (CI once), a rank aborted
    # after training with SIGABRT, "terminate called without an active exception" (a
    # native thread destroyed while running, as at exit), and torchrun reported a failed
    # run. Not root-caused (a plain gloo DDP script under torchrun: 0 aborts in 21 runs).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def torchrun(params: TrainSpec, nproc: int, work: Path) -> tuple[dict[str, Any], Timer]:
    shutil.rmtree(str(params.out_dir), ignore_errors=True)
    pfile, ofile = work / "params.pkl", work / "result.json"
    pfile.write_bytes(pickle.dumps(params))
    ofile.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           # --module from the repo root: the script imports benchmarks._common.
           f"--nproc_per_node={nproc}", "--module", "benchmarks.bench_train", "--rank-entry",
           str(pfile), str(ofile)]
    with Timer() as t:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"torchrun failed (exit {proc.returncode}; rank 0's result "
                           f"{'was' if ofile.exists() else 'was not'} written):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(ofile.read_text()), t


def distributor(spark: Any, params: TrainSpec, local_mode: bool
                ) -> tuple[dict[str, Any], Timer]:
    from pyspark.ml.torch.distributor import TorchDistributor

    from sparkforge.train.loop import train_rank

    shutil.rmtree(str(params.out_dir), ignore_errors=True)
    with Timer() as t:
        result = TorchDistributor(num_processes=2, local_mode=local_mode,
                                  use_gpu=False).run(train_rank, params)
    if result is None:
        raise RuntimeError("TorchDistributor returned no result from rank 0")
    return result, t


# --- 1. loader vs memory -------------------------------------------------------------------

def bench_loader(run: Path, name: str, repeat: int, batches: int, chunk: int = 10,
                 batch_size: int = 64) -> dict[str, Any]:
    """Memory and arrow sides interleaved in chunks of ``chunk`` batches (A B B A ...), so
    that load from other jobs falls on both alike; one model and optimizer serve both."""
    import numpy as np
    import torch

    from sparkforge.models import build_model
    from sparkforge.train.loader import ArrowLoader, trim_padding

    torch.set_num_threads(1)  # what each of the 2 ranks uses on this machine
    cols = [*TEXT_INPUTS, TARGET]
    loader = ArrowLoader(run / "preprocessed" / "split=train", cols, 0, 1, batch_size, seed=42)

    def tensors(b: dict[str, np.ndarray]) -> list[torch.Tensor]:
        t = trim_padding(b)
        return [torch.from_numpy(np.ascontiguousarray(t[k])) for k in cols]

    def arrow_batches(epoch: int) -> Any:
        for i, b in enumerate(loader.epoch(epoch)):
            if i >= batches:
                break
            yield tensors(b)

    torch.manual_seed(0)
    model = build_model(spec_for(run, name)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(ids: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> None:
        loss = torch.nn.functional.cross_entropy(model(ids, mask), y.long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for b in list(arrow_batches(99))[:5]:  # warm-up
        step(*b)
    runs = []
    for r in range(repeat):
        memory = list(arrow_batches(r))  # epoch r's batches, prebuilt as tensors
        rows = sum(len(b[-1]) for b in memory)
        live = arrow_batches(r)  # the same batches, read from Parquet while timed
        times: dict[str, list[float]] = {"memory": [], "arrow": []}
        wait_quiet()
        m0, c0, t_all = machine_cpu(), own_cpu(), time.perf_counter()
        for c, lo in enumerate(range(0, len(memory), chunk)):
            n = len(memory[lo:lo + chunk])
            for side in (("memory", "arrow") if c % 2 == 0 else ("arrow", "memory")):
                t0 = time.perf_counter()
                if side == "memory":
                    for b in memory[lo:lo + chunk]:
                        step(*b)
                else:
                    for _ in range(n):
                        step(*next(live))
                times[side].append(time.perf_counter() - t0)
        wall = time.perf_counter() - t_all
        others = max(0.0, (machine_cpu() - m0 - (own_cpu() - c0)) / wall)
        with Timer() as only:
            for _ in arrow_batches(r + 100):
                pass
        mem_s, arr_s = sum(times["memory"]), sum(times["arrow"])
        runs.append({"memory": rows / mem_s, "arrow": rows / arr_s, "ratio": mem_s / arr_s,
                     "chunk_ratio": statistics.median(
                         m / a for m, a in zip(times["memory"], times["arrow"], strict=True)),
                     "loader_only": rows / only.seconds, "others": others})
    return {"model": name, "rows": rows, "batch_size": batch_size, "batches": batches,
            "chunk": chunk, "runs": runs}


# --- 2. launch: TorchDistributor vs torchrun --------------------------------------------------

def bench_launch(run: Path, work: Path, repeat: int, spark: Any) -> dict[str, Any]:
    runs = []
    for i in range(repeat):
        row: dict[str, Any] = {}
        for side in ("torchrun", "td_local", "td_barrier"):
            params = params_for(run, work / f"launch-{side}-{i}", "embedding_bag", threads=1)
            if side == "torchrun":
                result, t = torchrun(params, 2, work)
            else:
                result, t = distributor(spark, params, local_mode=side == "td_local")
            h = result["history"][0]
            row[side] = {"wall": t.seconds, "epoch": h["epoch_s"],
                         "start": t.seconds - result["train_s"], "samples_s": h["samples_per_s"],
                         "others": t.others}
        runs.append(row)
    return {"model": "embedding_bag", "runs": runs}


# --- 3. scaling: 2 ranks vs 1 ------------------------------------------------------------------

def bench_scaling(run: Path, work: Path, repeat: int, minilm_steps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, batch, steps, lr in (("embedding_bag", 64, 80, 3e-3),
                                   ("minilm", 16, minilm_steps, 1e-4)):
        runs = []
        for i in range(repeat):
            row = {}
            for key, nproc, threads in (("1x2", 1, 2), ("1x1", 1, 1), ("2x1", 2, 1)):
                params = params_for(run, work / f"scale-{name}-{key}-{i}", name,
                                    threads=threads, batch_size=batch, lr=lr, max_steps=steps)
                result, t = torchrun(params, nproc, work)
                row[key] = {"samples_s": result["history"][0]["samples_per_s"],
                            "others": t.others}
            runs.append(row)
        out[name] = {"batch_size": batch, "max_steps": steps, "runs": runs}
    return out


# --- 4. models -------------------------------------------------------------------------------

def test_accuracy(run: Path, spec: dict[str, Any], weights: Path) -> tuple[float, int]:
    import numpy as np
    import torch

    from sparkforge.models import build_model, load_weights
    from sparkforge.train.loader import read_split, trim_padding

    model = load_weights(build_model({**spec, **({"pretrained": False}
                                                 if spec["name"] == "minilm" else {})}),
                         weights).eval()
    data = read_split(run / "preprocessed" / "split=test", [*TEXT_INPUTS, TARGET])
    correct = 0
    with torch.no_grad():
        for s in range(0, len(data[TARGET]), 256):
            b = trim_padding({k: v[s:s + 256] for k, v in data.items()})
            out = model(*(torch.from_numpy(np.ascontiguousarray(b[k])) for k in TEXT_INPUTS))
            correct += int((out.argmax(-1).numpy() == b[TARGET]).sum())
    return correct / len(data[TARGET]), len(data[TARGET])


def bench_models(run: Path, work: Path) -> dict[str, Any]:
    rows = {}
    for name, epochs, lr in (("embedding_bag", 5, 3e-3), ("transformer", 5, 1e-3)):
        params = params_for(run, work / f"model-{name}", name, epochs=epochs, lr=lr,
                            batch_size=32, patience=epochs)
        result, t = torchrun(params, 2, work)
        acc, n = test_accuracy(run, dict(params.model),
                               work / f"model-{name}" / "model.safetensors")
        rows[name] = {"epochs": epochs, "lr": lr, "batch_size": 32, "ranks": 2,
                      "test_accuracy": acc, "test_rows": n, "train_s": t.seconds,
                      "best_val": result["best_val_metric"]}
    spec = json.loads((run / "model" / "model.json").read_text())
    if spec["name"] == "minilm":
        acc, n = test_accuracy(run, spec, run / "model" / "model.safetensors")
        hist = json.loads((run / "model" / "history.json").read_text())
        rows["minilm"] = {"epochs": len(hist), "lr": None, "batch_size": 16, "ranks": 2,
                          "test_accuracy": acc, "test_rows": n,
                          "train_s": sum(h["epoch_s"] for h in hist),
                          "best_val": max(h["val_metric"] for h in hist)}
    baseline = None
    metrics = run / "metrics.json"
    if metrics.exists():
        baseline = json.loads(metrics.read_text()).get("baseline", {}).get("accuracy")
    return {"rows": rows, "baseline_accuracy": baseline}


# --- report --------------------------------------------------------------------------------

def med(xs: list[float]) -> float:
    return statistics.median(xs)


def render(res: dict[str, Any], previous: str) -> str:
    m = res["machine"]
    lines = [SECTION, "",
             f"- machine: nproc {m['nproc']}, {m['cpu']}, {m['ram']} RAM, Python "
             f"{m['python']}, {res['versions']}; {res['date']}; load average at start "
             f"{res['loadavg']}",
             "- data: the preprocessed demo text (Rotten Tomatoes, `make demo-text`): "
             f"{res.get('train_rows', '?')} train rows, 8 Parquet files, max length 64", ""]
    if "loader" in res or "launch" in res or "scaling" in res:
        lines += ["Sections 1-3 come from one run:", "", "```bash", res["command"], "```", ""]
    for key in ("loader", "launch", "scaling"):
        if key in res:
            lines += [*globals()[f"_render_{key}"](res[key]), ""]
    models = _extract(previous, "### 4.") if "models" not in res else None
    if "models" in res:
        lines += [*_render_models(res["models"], res["command"], res["date"]), ""]
    elif models:
        lines += [models.rstrip("\n"), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _render_loader(rs: list[dict[str, Any]]) -> list[str]:
    lines = ["### 1. Loader throughput vs in-memory tensors (goal >= 0.95x)", "",
             f"One process, 1 torch thread (as each of the 2 ranks here; the loader reads in "
             f"its own thread), the first {rs[0]['batches']} batches of 64 of an "
             "epoch, fed from Parquet by the `arrow` loader (plan, reading, shuffling and "
             "conversion to tensors included) or prebuilt as tensors in memory; one model and "
             f"optimizer; the two sides interleaved in chunks of {rs[0]['chunk']} batches "
             "(A B B A ...) so that other jobs' load falls on both alike. embedding_bag is the "
             "fastest model here, so the loader's share of the time is largest with it. "
             "Ratios are memory time / arrow time (= arrow samples/s / memory samples/s): "
             "of the totals, and the median over the adjacent chunk pairs, which is what "
             "the goal is judged on since it cancels most of the other jobs' load.", "",
             "| model | memory samples/s | arrow loader samples/s | ratio of totals "
             "| ratio (median of chunk pairs) | loader alone rows/s | others' cores |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rs:
        runs = r["runs"]
        ratio = med([x["chunk_ratio"] for x in runs])
        ok = "met" if ratio >= 0.95 else "NOT met"
        lines.append(f"| {r['model']} | {med([x['memory'] for x in runs]):,.0f} | "
                     f"{med([x['arrow'] for x in runs]):,.0f} | "
                     f"{med([x['ratio'] for x in runs]):.2f} | **{ratio:.2f}** ({ok}) | "
                     f"{med([x['loader_only'] for x in runs]):,.0f} | "
                     f"{med([x['others'] for x in runs]):.2f} |")
    lines += ["", f"Medians of {len(rs[0]['runs'])} runs (each a different epoch's batches); "
              "per-run ratios of totals / of chunk pairs: " + "; ".join(
                  ", ".join(f"{x['ratio']:.2f} / {x['chunk_ratio']:.2f}" for x in r["runs"])
                  for r in rs) + "."]
    return lines


def _render_launch(r: dict[str, Any]) -> list[str]:
    runs = r["runs"]
    lines = ["### 2. One epoch under TorchDistributor vs plain torchrun "
             "(goal <= 1.05x, fixed start <= 15 s)", "",
             "`embedding_bag`, 2 ranks x 1 thread, gloo, batch 64 per rank, one epoch plus "
             "validation and a checkpoint. Epoch = the epoch's training time from the history; "
             "start = wall clock minus the time inside `train_rank`; \"epoch vs torchrun\" is "
             "the median of the per-round ratios (the three launchers run back to back in "
             "each round). With local_mode=False the ranks are Spark's Python workers, so "
             "their CPU shows under \"others' cores\".", "",
             "| launcher | wall s | epoch s | epoch vs torchrun | start s | samples/s "
             "| others' cores |", "|---|---:|---:|---:|---:|---:|---:|"]
    for side, label in (("torchrun", "torchrun --standalone"),
                        ("td_local", "TorchDistributor local_mode=True"),
                        ("td_barrier", "TorchDistributor local_mode=False")):
        v = {k: med([x[side][k] for x in runs]) for k in ("wall", "epoch", "start", "samples_s",
                                                          "others")}
        ratio = med([x[side]["epoch"] / x["torchrun"]["epoch"] for x in runs])
        ok = "" if side == "torchrun" else (
            " (met)" if ratio <= 1.05 and v["start"] <= 15 else " (NOT met)")
        lines.append(f"| {label} | {v['wall']:.1f} | {v['epoch']:.2f} | {ratio:.2f}{ok} | "
                     f"{v['start']:.1f} | {v['samples_s']:,.0f} | {v['others']:.2f} |")
    lines += ["", f"Medians of {len(runs)} alternating rounds; per-round epoch s "
              "(torchrun / local / barrier): " + "; ".join(
                  f"{x['torchrun']['epoch']:.2f} / {x['td_local']['epoch']:.2f} / "
                  f"{x['td_barrier']['epoch']:.2f}" for x in runs) + "."]
    return lines


def _render_scaling(r: dict[str, Any]) -> list[str]:
    lines = ["### 3. 2 ranks vs 1 rank on this 2-core machine", "",
             "Under torchrun, DDP on gloo: 2 ranks x 1 torch thread (what `train` runs with "
             "`num_processes: 2` here) vs 1 rank x 2 threads and 1 rank x 1 thread; samples/s "
             "of the first steps of an epoch (capped as shown; batch per rank as shown). "
             "The ratios are medians of the per-round ratios.", "",
             "| model | batch/rank | 1 rank x 2 threads | 1 rank x 1 thread | 2 ranks x 1 thread "
             "| 2 ranks vs 1x2 | 2 ranks vs 1x1 | others' cores |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    others_all: list[float] = []
    vs_1x1: dict[str, float] = {}
    for name, v in r.items():
        runs = v["runs"]
        sps = {k: med([x[k]["samples_s"] for x in runs]) for k in ("1x2", "1x1", "2x1")}
        vs = {k: med([x["2x1"]["samples_s"] / x[k]["samples_s"] for x in runs])
              for k in ("1x2", "1x1")}
        others = med([x[k]["others"] for x in runs for k in ("1x2", "1x1", "2x1")])
        others_all.append(others)
        vs_1x1[name] = vs["1x1"]
        cap = f" ({v['max_steps']} steps)" if v["max_steps"] else ""
        lines.append(f"| {name}{cap} | {v['batch_size']} | {sps['1x2']:,.1f} | "
                     f"{sps['1x1']:,.1f} | {sps['2x1']:,.1f} | {vs['1x2']:.2f}x | "
                     f"{vs['1x1']:.2f}x | {others:.2f} |")
    lines += [
        "", "Reading the figures:", "",
        f"- Other jobs used about {med(others_all):.1f} of the machine's 2 cores during these "
        "runs, so two ranks had roughly one core's worth of spare CPU to share: there is "
        "little to scale into, and 2 ranks vs 1 rank x 1 thread is the fair comparison.",
        "- 1 rank x 2 threads collapses on a loaded machine: each intra-op parallel region "
        "waits for its slowest thread, and one of the two is often descheduled. This is why "
        "`train` gives each rank cores per task (1 here) and not more.",
        "- embedding_bag's step is dominated by the dense AdamW update of its 30,522 x 128 "
        "embedding table (3.9M parameters), which DDP repeats on every rank, plus an "
        "all-reduce of 15.6 MB of gradients per step over gloo: 2 ranks cannot beat 1 for "
        f"it on 2 cores ({vs_1x1.get('embedding_bag', float('nan')):.2f}x). MiniLM's step "
        "is its forward and backward (compute-bound, only a comparatively small "
        f"optimizer step replicated), so it is where a second rank can pay ("
        f"{vs_1x1.get('minilm', float('nan')):.2f}x here, with about one free core); on a "
        "machine whose cores are free, this is the comparison that shows the scaling.",
    ]
    return lines


def _render_models(r: dict[str, Any], command: str, date: str) -> list[str]:
    lines = ["### 4. Text models on the demo split (test accuracy, fp32 torch)", "",
             "```bash", command, "```", "", f"Run {date}.", "",
             "| model | epochs | ranks | batch/rank | train s | best val acc | test acc |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, v in r["rows"].items():
        lines.append(f"| {name} | {v['epochs']} | {v['ranks']} | {v['batch_size']} | "
                     f"{v['train_s']:.0f} | {v['best_val']:.3f} | **{v['test_accuracy']:.3f}** |")
    if r.get("baseline_accuracy") is not None:
        lines.append(f"| TF-IDF + LogisticRegression (metrics.json) | | | | | | "
                     f"{r['baseline_accuracy']:.3f} |")
    n = next(iter(r["rows"].values()))["test_rows"]
    lines += ["", f"Test split: {n} rows. embedding_bag and transformer trained from scratch "
              "here (2 ranks); the MiniLM row is the model `make demo-text` fine-tuned "
              "(1 epoch, 2 ranks, batch 16, lr 1e-4)."]
    return lines


def _extract(body: str, heading: str) -> str | None:
    start = body.find(heading)
    if start < 0:
        return None
    nxt = re.search(r"^##+ ", body[start + len(heading):], re.M)
    return body[start:start + len(heading) + nxt.start()] if nxt else body[start:]


def section_of(md: Path) -> str:
    body = md.read_text() if md.exists() else ""
    start = body.find(SECTION + "\n")
    if start < 0:
        return ""
    nxt = re.search(r"^## ", body[start + len(SECTION) + 1:], re.M)
    return body[start:start + len(SECTION) + 1 + nxt.start()] if nxt else body[start:]


# --- main ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "demo_text")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--only", choices=["loader", "launch", "scaling", "models"], action="append")
    p.add_argument("--minilm-steps", type=int, default=24)
    p.add_argument("--loader-batches", type=int, default=120,
                   help="batches per timed side of the loader benchmark")
    p.add_argument("--no-write", action="store_true", help="print, do not edit BENCHMARKS.md")
    p.add_argument("--save", type=Path, help="also write the raw results to this JSON file")
    p.add_argument("--render", type=Path, help="only re-render BENCHMARKS.md from --save JSON")
    p.add_argument("--quiet-wait", type=float, default=60.0,
                   help="seconds to wait for other jobs to go quiet before each timed part")
    args = p.parse_args(argv)
    QUIET_WAIT[0] = args.quiet_wait
    if args.render:
        saved: dict[str, Any] = json.loads(args.render.read_text())
        text = render(saved, section_of(BENCHMARKS_MD))
        print(text)
        if not args.no_write:
            write_section(BENCHMARKS_MD, SECTION, text)
        return saved
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    run = args.run.resolve()
    if not (run / "preprocessed" / "split=train").is_dir():
        raise SystemExit(f"{run} has no preprocessed/split=train; run `make demo-text` first")
    only = args.only or ["loader", "launch", "scaling"]
    import pyarrow.parquet as pq

    res: dict[str, Any] = {
        "machine": machine(), "versions": versions(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "command": ".venv/bin/python -m benchmarks.bench_train " + " ".join(
            argv if argv is not None else sys.argv[1:]),
        "train_rows": sum(pq.ParquetFile(f).metadata.num_rows
                          for f in (run / "preprocessed" / "split=train").glob("*.parquet")),
    }
    with tempfile.TemporaryDirectory(prefix="bench_train-") as tmp:
        work = Path(tmp)
        if "loader" in only:
            res["loader"] = [bench_loader(run, "embedding_bag", args.repeat,
                                          args.loader_batches, chunk=4)]
            print(json.dumps(res["loader"], indent=1), flush=True)
        if "launch" in only:
            from sparkforge.config import SparkConfig
            from sparkforge.spark.session import get_session

            spark = get_session(SparkConfig(master="local[2]", app_name="bench-train"),
                                extra={"spark.ui.enabled": "false"})
            res["launch"] = bench_launch(run, work, args.repeat, spark)
            print(json.dumps(res["launch"], indent=1), flush=True)
        if "scaling" in only:
            res["scaling"] = bench_scaling(run, work, args.repeat, args.minilm_steps)
            print(json.dumps(res["scaling"], indent=1, default=str), flush=True)
        if "models" in only:
            res["models"] = bench_models(run, work)
            print(json.dumps(res["models"], indent=1), flush=True)
    if args.save:
        args.save.write_text(json.dumps(res, indent=1, default=str))
    previous = section_of(BENCHMARKS_MD)
    if set(only) == {"models"} and previous:
        # Keep sections 1-3 of the last full run; replace only the models table.
        old = _extract(previous, "### 4.")
        body = previous.replace(old, "") if old else previous
        text = body.rstrip("\n") + "\n\n" + "\n".join(
            _render_models(res["models"], res["command"], res["date"])) + "\n"
    else:
        text = render(res, previous)
    print(text)
    if not args.no_write:
        write_section(BENCHMARKS_MD, SECTION, text)
    return res


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--rank-entry":
        rank_entry(sys.argv[2], sys.argv[3])
    else:
        main()
