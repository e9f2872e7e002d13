"""The one executor-side scoring core: Arrow record batches -> model inputs -> a model ->
output columns, with the model loaded once per Python worker.

Shaped like pyspark's ``predict_batch_udf(make_predict_fn, ...)``: :class:`ModelRef` is
the small, picklable recipe shipped in the task closure; :func:`load_backend` turns it
into a :class:`Backend` on the executor, cached per worker (Spark reuses Python workers,
``spark.python.worker.reuse`` defaults to true); :class:`Predictor` feeds a backend
from Arrow batches in ``batch_size``-row calls. :func:`map_predictions` runs one
predictor over a DataFrame in ``mapInArrow``, with an ``emit`` function that turns a batch
and its model outputs into the output columns: ``score_df`` (predictions and
probabilities), ``embed_df`` (embeddings) and distillation's ``soft_label_df`` (teacher
logits) are three ``emit`` functions over this core.

The model format is behind :class:`Backend`, one loader per format in ``BACKENDS``: ONNX
Runtime (:class:`OnnxBackend`, format ``onnx``) and torch (:class:`TorchBackend`, format
``torch``: safetensors weights and the model spec that ``build_model`` rebuilds them into).
Which format scores a variant is decided in one place, on the driver
(:func:`sparkforge.infer.runs.variant_model`).

``mapInArrow`` rather than ``mapInPandas``: the inputs are a reshape of the Arrow list
buffers (no per-row Python objects) and the outputs are built as Arrow arrays; measured
1.2-1.8x faster than the same code on ``mapInPandas`` (BENCHMARKS.md, Scoring).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sparkforge.models import INPUT_DTYPES

if TYPE_CHECKING:
    import onnxruntime as ort
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql import DataFrame
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)

OUTPUT = "logits"           # the output every exported graph names (compress/onnx_export.py)
MAX_CACHED_SESSIONS = 2
# Driver-side environment variable naming a file to which each model load appends a
# line; read when the scoring plan is built and shipped in the closure.
LOAD_LOG_ENV = "SPARKFORGE_SESSION_LOAD_LOG"
_SESSIONS: dict[str, Any] = {}


class Backend(Protocol):
    """A loaded model: named input arrays in, its one output array (rows first) out."""

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class ModelRef:
    """What an executor needs to load a model: shipped in the closure, loaded there.

    ``sha256`` is the file's recorded hash: a file that differs is refused, so a model
    that changed after it was selected is never scored. ``threads``: intra-op threads
    (1 per Spark task slot: the slots are the parallelism). ``format``: a key of
    ``BACKENDS``; for ``torch``, ``path`` is the safetensors weights and ``spec`` the
    model spec's JSON text (``model.json``, checked against the manifest on the driver)."""

    path: str
    sha256: str
    threads: int = 1
    format: str = "onnx"
    load_log: str | None = None
    spec: str = ""


class OnnxBackend:
    """An onnxruntime ``InferenceSession`` (CUDA first when the build has it)."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session

    @classmethod
    def load(cls, ref: ModelRef) -> OnnxBackend:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = ref.threads
        opts.inter_op_num_threads = 1
        # Idle intra-op threads sleep instead of spinning: with more than one thread they
        # would otherwise burn the cores that the executor's other tasks (and the JVM)
        # need between batches.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        return cls(ort.InferenceSession(ref.path, opts, providers=providers))

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        out: np.ndarray = self.session.run([OUTPUT], feeds)[0]
        return out


class TorchBackend:
    """A torch module rebuilt from its spec (``build_model``) and safetensors weights
    (loaded strictly: every tensor present, none left over; no pickle), in eval mode.

    ``run`` takes the ONNX graph's inputs (``input_names(spec)``, the order
    ``compress/onnx_export.py`` exports them in) and returns what the graph's ``logits``
    output holds: float32, rows first. On a CUDA GPU the forward runs under bf16 autocast
    (logits then differ from fp32 by bf16's ~3 significant digits); on CPU in fp32 with
    ``ref.threads`` intra-op threads."""

    def __init__(self, model: Any, inputs: list[str], device: Any, threads: int) -> None:
        self.model, self.inputs, self.device, self.threads = model, inputs, device, threads

    @classmethod
    def load(cls, ref: ModelRef) -> TorchBackend:
        import json

        import torch

        from sparkforge.models import build_model, input_names, load_weights

        if not ref.spec:
            raise ValueError(f"{ref.path}: a torch model needs its spec (model.json's text) "
                             "in ModelRef.spec")
        spec = json.loads(ref.spec)
        # load_weights: safetensors' load_file + load_state_dict, strict (tensors that
        # save_weights de-duplicated as shared are the only ones allowed to be absent).
        model = load_weights(build_model(spec), ref.path).eval()
        if torch.cuda.is_available():
            device = torch.device("cuda")
            model.to(device)
        else:
            device = torch.device("cpu")
            torch.set_num_threads(ref.threads)
        return cls(model, input_names(spec), device, ref.threads)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feeds[n], dtype=INPUT_DTYPES[n]))
                for n in self.inputs]
        with torch.inference_mode():
            if self.device.type == "cuda":
                args = [a.to(self.device, non_blocking=True) for a in args]
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    out = self.model(*args)
            else:
                if torch.get_num_threads() != self.threads:  # another model set it
                    torch.set_num_threads(self.threads)
                out = self.model(*args)
            logits: np.ndarray = out.float().cpu().numpy()
        return logits


# format -> loader (ModelRef.format)
BACKENDS: dict[str, Callable[[ModelRef], Backend]] = {"onnx": OnnxBackend.load,
                                                      "torch": TorchBackend.load}


def load_backend(ref: ModelRef) -> Backend:
    """The cached backend for ``ref``: loaded (and its sha256 checked) once per worker."""
    key = f"{ref.format}:{ref.sha256}:{ref.threads}"
    backend = _SESSIONS.get(key)
    if backend is None:
        from sparkforge.artifacts import sha256_file

        if ref.format not in BACKENDS:
            raise ValueError(f"model format {ref.format!r}: use one of {sorted(BACKENDS)}")
        actual = sha256_file(Path(ref.path))
        if actual != ref.sha256:
            raise RuntimeError(f"{ref.path} has sha256 {actual}, expected {ref.sha256}: the "
                               "model changed after it was selected; rerun compress")
        backend = BACKENDS[ref.format](ref)
        # Keep the few most recent models: a stage that scores several variants in turn
        # must not hold every model in each worker (MiniLM variants are ~1 GB each).
        while len(_SESSIONS) >= MAX_CACHED_SESSIONS:
            _SESSIONS.pop(next(iter(_SESSIONS)))
        _SESSIONS[key] = backend
        log.info("loaded %s model %s (%s) in pid %d", ref.format, ref.path, ref.sha256[:12],
                 os.getpid())
        if ref.load_log:
            with open(ref.load_log, "a") as fh:
                fh.write(f"{os.getpid()} {ref.sha256}\n")
    return backend


def onnx_session(path: str, sha256: str, threads: int = 1,
                 load_log: str | None = None) -> ort.InferenceSession:
    """The cached InferenceSession for ``path``; loaded once per worker process."""
    backend = load_backend(ModelRef(path, sha256, threads, "onnx", load_log))
    assert isinstance(backend, OnnxBackend)
    return backend.session


def trim_padding(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Token inputs cut to the batch's longest row (right padding carries no signal and
    attention cost grows with the length); other inputs unchanged."""
    if "attention_mask" not in feeds:
        return feeds
    longest = max(int(feeds["attention_mask"].sum(axis=1).max(initial=0)), 1)
    return {k: np.ascontiguousarray(v[:, :longest]) if k in ("input_ids", "attention_mask")
            else v for k, v in feeds.items()}


def arrow_inputs(batch: pa.RecordBatch, names: list[str]) -> dict[str, np.ndarray]:
    """Fixed-width list columns of an Arrow batch -> model inputs: a reshape of the
    values buffer, no per-row Python objects; padding trimmed to the batch's longest.
    Tabular ``features`` in compact form (``sparkforge.features.compact``) are expanded."""
    from sparkforge import features

    feeds: dict[str, np.ndarray] = {}
    n = batch.num_rows
    for name in features.source_columns(names, batch.schema.names):
        col = batch.column(name)
        if name == features.DIM:
            feeds[name] = col.to_numpy(zero_copy_only=False)
            continue
        values = col.flatten().to_numpy(zero_copy_only=False)
        feeds[name] = values.reshape(n, values.size // max(n, 1))
    feeds = features.densify(feeds)
    return trim_padding({k: v.astype(INPUT_DTYPES[k], copy=False) for k, v in feeds.items()})


def model_inputs(pdf: pd.DataFrame, names: list[str]) -> dict[str, np.ndarray]:
    """Array columns of a pandas batch -> the model's input tensors (padding trimmed;
    compact tabular features expanded)."""
    from sparkforge import features

    feeds = features.from_pandas(pdf, names)
    return trim_padding({n: feeds[n].astype(INPUT_DTYPES[n], copy=False) for n in names})


def run_batched(run: Callable[[dict[str, np.ndarray]], np.ndarray],
                feeds: dict[str, np.ndarray], batch_size: int) -> np.ndarray:
    """``run`` over ``feeds`` in ``batch_size``-row calls, each trimmed to its longest row."""
    n = len(next(iter(feeds.values())))
    outs = [run(trim_padding({k: v[s:s + batch_size] for k, v in feeds.items()}))
            for s in range(0, n, batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, 1), dtype=np.float32)


def predict(sess: ort.InferenceSession, feeds: dict[str, np.ndarray],
            batch_size: int) -> np.ndarray:
    """An onnxruntime session's logits over ``feeds`` in ``batch_size``-row calls."""
    return run_batched(OnnxBackend(sess).run, feeds, batch_size)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


class Predictor:
    """A backend fed from Arrow batches: ``predict(batch)`` -> its outputs, one row each."""

    def __init__(self, backend: Backend, inputs: list[str], batch_size: int = 256) -> None:
        self.backend, self.inputs, self.batch_size = backend, list(inputs), batch_size

    @classmethod
    def load(cls, ref: ModelRef, inputs: list[str], batch_size: int = 256) -> Predictor:
        return cls(load_backend(ref), inputs, batch_size)

    def predict(self, batch: pa.RecordBatch) -> np.ndarray:
        return self.predict_feeds(arrow_inputs(batch, self.inputs))

    def predict_feeds(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return run_batched(self.backend.run, feeds, self.batch_size)


Emit = Callable[["pa.RecordBatch", np.ndarray], "pa.RecordBatch"]


def map_predictions(df: DataFrame, ref: ModelRef, *, inputs: list[str], columns: list[str],
                    schema: StructType, emit: Emit, batch_size: int = 256) -> DataFrame:
    """``df``'s ``columns`` (the model ``inputs`` among them; tabular ``features`` may be
    in compact form) through the model of ``ref`` in ``mapInArrow``;
    ``emit(batch, outputs)`` builds each output batch, whose columns match ``schema``."""
    from sparkforge import features

    def _predict(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        predictor = Predictor.load(ref, inputs, batch_size)
        for b in batches:
            if b.num_rows:
                yield emit(b, predictor.predict(b))

    return df.select(*features.source_columns(columns, df.columns)).mapInArrow(_predict, schema)


def list_array(matrix: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """A 2-d array as an Arrow list column, one row per row (widths may be 0)."""
    import pyarrow as pa

    n, k = matrix.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * k)  # k may be 0 (regression)
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel(), type=value_type))


def score_columns(batch: pa.RecordBatch, logits: np.ndarray, labels: list[str],
                  variant: str, passthrough: list[str] | tuple[str, ...] = (),
                  threshold: float | None = None) -> pa.RecordBatch:
    """``score_df``'s output for one batch: id, label, prediction, probability (softmax,
    in ``labels`` order; empty for regression: ``labels`` empty), split, model_variant,
    then ``passthrough``. ``threshold``: see :func:`sparkforge.metrics.threshold.decide`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from sparkforge.metrics.threshold import decide

    n = batch.num_rows
    if not labels:
        pred = pa.array(logits[:, 0].astype(np.float64))
        prob = list_array(np.zeros((n, 0)), pa.float64())
    else:
        p = softmax(logits.astype(np.float64))
        pred = pc.take(pa.array(labels, type=pa.string()), pa.array(decide(p, threshold)))
        prob = list_array(p, pa.float64())
    cols = {"id": batch.column("id"), "label": batch.column("label"), "prediction": pred,
            "probability": prob, "split": batch.column("split"),
            "model_variant": pa.array([variant] * n, type=pa.string())}
    for c in passthrough:
        cols[c] = batch.column(c)
    # from_arrays, not pa.record_batch(dict): pyarrow 14 (the floor) has no dict form
    return pa.RecordBatch.from_arrays(list(cols.values()), names=list(cols))
