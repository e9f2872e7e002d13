"""A small preprocessed run folder for the training tests (what `preprocess` would write).

Uneven Parquet files, several row groups per file and an empty file in every split, so
the training tests exercise the loader's share/pad logic under real ranks.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sparkforge.config import Config, DataConfig, OutputConfig, SparkConfig, TrainConfig

SPLIT_FILES = {"train": [0, 97, 41, 0, 63], "val": [31, 0, 26], "test": [40]}
VOCAB = 120
SEQ = 12


def _tabular(rng: np.random.Generator, n: int) -> dict[str, Any]:
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] + 0.7 * x[:, 1] - 0.4 * x[:, 2] > 0).astype(np.int32)
    return {"features": pa.array(list(x), pa.list_(pa.float32())),
            "label_index": pa.array(y, pa.int32())}


def _text(rng: np.random.Generator, n: int) -> dict[str, Any]:
    lengths = rng.integers(3, SEQ + 1, size=n)
    mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(4, VOCAB, size=(n, SEQ)).astype(np.int32)
    y = rng.integers(0, 2, size=n).astype(np.int32)
    # The label is written into the text: class 1 rows carry token 3 somewhere.
    ids[y == 1, 0] = 3
    ids = ids * mask
    return {"input_ids": pa.array(list(ids), pa.list_(pa.int32())),
            "attention_mask": pa.array(list(mask), pa.list_(pa.int32())),
            "label_index": pa.array(y, pa.int32())}


def make_run(root: Path, text: bool = False, seed: int = 0) -> Path:
    """Write preprocessed/, model/labels.json (+ preprocessor/tokenizer), manifest.json."""
    rng = np.random.default_rng(seed)
    start = 0
    counts: dict[str, int] = {}
    for split, sizes in SPLIT_FILES.items():
        folder = root / "preprocessed" / f"split={split}"
        folder.mkdir(parents=True)
        for i, n in enumerate(sizes):
            cols = _text(rng, n) if text else _tabular(rng, n)
            labels = np.where(np.asarray(cols["label_index"]) == 1, "yes", "no")
            # Explicit types: an empty file must not infer a null-typed column.
            table = pa.table({"id": pa.array([f"{split}-{j}" for j in range(start, start + n)],
                                             pa.string()),
                              # a numeric id too: petastorm's torch loader refuses strings
                              "row": pa.array(np.arange(start, start + n), pa.int64()),
                              **cols, "label": pa.array(labels.tolist(), pa.string())})
            pq.write_table(table, folder / f"part-{i:05d}.parquet", row_group_size=16)
            start += n
        counts[split] = sum(sizes)
    model = root / "model"
    model.mkdir(parents=True)
    (model / "labels.json").write_text(json.dumps(["no", "yes"]))
    if text:
        from tokenizers import Tokenizer
        from tokenizers.models import WordLevel

        vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, **{f"w{i}": i for i in range(3, VOCAB)}}
        Tokenizer(WordLevel(vocab, unk_token="[UNK]")).save(str(model / "tokenizer.json"))
    else:
        (model / "preprocessor.json").write_text(json.dumps({"dim": 6}))
    manifest = {"preprocess": {"rows_per_split": counts,
                               "label_distribution": {"no": 60, "yes": 40}}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def train_ids() -> list[str]:
    return [f"train-{j}" for j in range(sum(SPLIT_FILES["train"]))]


def train_rows() -> list[int]:
    """The ``row`` values of the train split (it is written first)."""
    return list(range(sum(SPLIT_FILES["train"])))


def config(root: Path, text: bool = False, **train: Any) -> Config:
    defaults: dict[str, Any] = {"num_processes": 2, "epochs": 2, "batch_size": 16, "lr": 3e-2,
                                "hidden_dim": 32, "early_stopping_patience": 5,
                                # the batch as given: these tests count steps of 16 rows
                                "min_steps_per_epoch": 1}
    return Config(
        task="text_classification" if text else "tabular_classification",
        data=DataConfig(input="unused.csv", text_column="text" if text else None),
        spark=SparkConfig(master="local[2]"),
        train=TrainConfig(**{**defaults, **train}),
        output=OutputConfig(dir=str(root)),
    )


def traced(trace: Path, epoch: int, world: int) -> tuple[Counter[str], int, list[int]]:
    """(how often each id was trained on, rows flagged as padding, steps per rank)."""
    counts: Counter[str] = Counter()
    steps, pad = [], 0
    for r in range(world):
        rec = json.loads((trace / f"epoch{epoch}-rank{r}.json").read_text())
        counts.update(rec["ids"])
        pad += rec["pad_rows"]
        steps.append(rec["steps"])
    return counts, pad, steps


def _with_dense_features(pdf: Any, columns: list[str]) -> Any:
    """``pdf``'s ``columns`` with ``features`` (stored dense or compact) as one dense
    float32 array per row."""
    from sparkforge import features

    out = pdf[[c for c in columns if c != features.FEATURES]].copy()
    if features.FEATURES in columns:
        out[features.FEATURES] = list(features.from_pandas(pdf, [features.FEATURES])
                                      [features.FEATURES])
    return out[columns]


def encode_dense(df: Any, stats: dict[str, Any], columns: list[str]) -> Any:
    """Prepared rows of ``df`` encoded as scoring encodes them (``features.compact`` in
    Spark), collected with ``columns`` and a dense ``features`` column (one array a row)."""
    from sparkforge import features

    pdf = features.compact(df, stats).select(*columns, *features.COMPACT).toPandas()
    return _with_dense_features(pdf, [*columns, features.FEATURES])


def read_preprocessed(path: Path, columns: list[str]) -> Any:
    """``columns`` of a ``preprocessed/`` folder (``split`` from the folder names) as a
    pandas frame, with ``features`` dense (one float32 array per row) whether it is stored
    dense or compact: the tests' view of what the model is fed."""
    import pyarrow.dataset as pads

    from sparkforge import features

    data = pads.dataset(str(path), format="parquet", partitioning="hive")
    stored = features.source_columns(columns, data.schema.names)
    return _with_dense_features(data.to_table(columns=stored).to_pandas(), columns)
