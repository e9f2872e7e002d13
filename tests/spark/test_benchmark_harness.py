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
from _train_helpers import SPLIT_FILES, make_run
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
