"""The benchmarks' own subprocesses start and do the work they time.

bench_train runs ranks under torchrun and bench_tokenize runs its raw side in a child
process; both import ``benchmarks._common``, which only resolves when the child runs as
a module from the repo root (run as a script path, both failed at import). No timing is
checked here: the figures come from ``make bench``.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _train_helpers import SPLIT_FILES, make_run
from benchmarks import bench_gpu
from benchmarks.bench_tokenize import run_raw_process
from benchmarks.bench_train import params_for, torchrun

from sparkforge.tokenize import encode, load_pretrained

TEXTS = ["a gripping film", "", "dull and long, far too long", "Ünïcödé survives"] * 40


def test_tokenize_raw_side_writes_the_tokenizers_ids(tmp_path: Path) -> None:
    inp, out, tok_file = tmp_path / "in.parquet", tmp_path / "out.parquet", tmp_path / "t.json"
    pq.write_table(pa.table({"id": pa.array(range(len(TEXTS)), pa.int64()),
                             "label": pa.array(["pos", "neg"] * (len(TEXTS) // 2)),
                             "text": pa.array(TEXTS)}), inp)
    tok_file.write_text(load_pretrained(16).to_str())
    timing = run_raw_process(inp, tok_file, out, cores=1, batch_rows=64)
    assert timing["rows"] == len(TEXTS)
    assert timing["seconds"] > 0
    table = pq.read_table(out)
    want_ids, want_mask = encode(load_pretrained(16), [t.strip() for t in TEXTS])
    assert table.column("input_ids").to_pylist() == want_ids
    assert table.column("attention_mask").to_pylist() == want_mask


def test_train_ranks_run_under_torchrun(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", text=True)
    work = tmp_path / "work"
    work.mkdir()
    params = params_for(run, work / "model", "embedding_bag", epochs=1, batch_size=16)
    result, timer = torchrun(params, 2, work)
    history = result["history"]
    assert [h["epoch"] for h in history] == [0]
    assert history[0]["val_rows"] == sum(SPLIT_FILES["val"])
    assert (work / "model" / "model.safetensors").exists()
    assert timer.seconds > 0


def test_bench_gpu_bundles_a_text_run_and_measures_on_the_cpu(tmp_path: Path) -> None:
    """bench_gpu as CI can run it (no GPU): the bundle holds the run's train and val rows
    (counted here from its files), the model's weights in fp16 and PyYAML's package; its
    run trains through the training core and in memory, fine-tunes, scores with the torch
    backend, and writes every figure to JSON and the Markdown table."""
    import json

    import torch
    from safetensors.torch import load_file

    from sparkforge.models import build_model

    run = make_run(tmp_path / "run", text=True)
    spec = {"name": "transformer", "num_outputs": 2, "vocab_size": 120, "hidden_dim": 16,
            "num_layers": 1, "num_heads": 2, "ffn_dim": 32, "max_length": 16}
    bundle = bench_gpu.make_bundle(run, tmp_path / "bundle", rows=10_000, spec=spec)
    for split in ("train", "val"):
        assert pq.read_table(bundle / split).num_rows == sum(SPLIT_FILES[split])
    weights = load_file(str(bundle / "model.safetensors"))
    assert weights.keys() == build_model(spec).state_dict().keys()
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float16}
    assert (bundle / bench_gpu.PY_DIR / "yaml" / "__init__.py").is_file()

    for argv in (["bundle", "--run", str(tmp_path / "none"), "--out", str(tmp_path / "b")],
                 ["run", "--bundle", str(tmp_path / "none")]):
        with pytest.raises(SystemExit) as exit_:
            bench_gpu.main(argv)  # a wrong folder: a usage error, no traceback
        assert exit_.value.code == 2

    out = tmp_path / "out" / "gpu.json"
    res = bench_gpu.main(["run", "--bundle", str(bundle), "--loader-batch", "8", "16",
                          "--loader-steps", "4", "--batch", "32", "--fine-tune-steps", "3",
                          "--repeat", "2", "--score-batch", "16", "--eager-only",
                          "--out", str(out)])
    assert res["device"] == "cpu"
    for b, r in res["loader"].items():
        assert len(r["trainer"]["runs"]) == len(r["memory"]["runs"]) == 2, b
        assert min(r["trainer"]["runs"] + r["memory"]["runs"]) > 0
        assert r["ratio"] == r["trainer"]["median"] / r["memory"]["median"]
    assert sorted(res["loader"]) == ["16", "8"]
    tuned = res["fine_tune"]["eager"]
    assert tuned["samples"] == 3 * 32  # the second epoch's
    assert tuned["val_rows"] == sum(SPLIT_FILES["val"])
    assert len(tuned["val_metric"]["runs"]) == len(tuned["samples_per_s"]["runs"]) == 2
    assert all(0.0 <= a <= 1.0 for a in tuned["val_metric"]["runs"])
    assert tuned["samples_per_s"]["min"] > 0
    assert res["score"]["rows"] == sum(SPLIT_FILES["val"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    assert "| loader, batch 16: `Trainer` / in-memory tensors |" in (
        out.with_suffix(".md").read_text())


def test_scale_sampler_sees_a_child_process_memory() -> None:
    """bench_scale's peak-memory sampler: a child that holds 300 MiB is counted under
    its kind (here the Python workers: a python process below the root)."""
    import subprocess
    import sys

    from benchmarks.bench_scale import PeakMemory

    code = "import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); " \
           "time.sleep(1.5)"
    parent = subprocess.Popen(["/bin/sh", "-c", f"{sys.executable} -c \"{code}\"; true"])
    with PeakMemory(parent.pid, every_s=0.1) as mem:
        assert parent.wait() == 0
    assert mem.peak_kb["python_workers"] >= 300 * 1024
    assert mem.peak_kb["driver"] < 50 * 1024  # the shell itself
