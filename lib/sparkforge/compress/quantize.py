"""Post-training quantization of exported ONNX models with ONNX Runtime's tooling.

- dynamic int8: weights of MatMul and Gather (embedding tables) become int8;
  activations are quantized on the fly at run time, so no calibration data is needed.
- static int8: QDQ format, per-channel int8 weights, uint8 activations whose ranges
  are calibrated once on sample rows (:class:`SampleReader`); ORT fuses the QDQ pairs
  into integer kernels (QLinearMatMul).
- fp16: every float weight and activation in half precision, inputs and outputs kept
  float32/int64 (for GPU scoring; on a CPU it runs, casts included, at about fp32 speed).

The int8 functions run ``quant_pre_process`` first; each writes one self-contained file.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# MatMul covers every Linear layer applied to 3-D activations (the transformer's
# projections and FFN); Gather covers embedding tables, which are most of a text
# model's bytes. 2-D Linear layers export as Gemm, which ORT has no dynamic int8
# kernel for: they stay fp32 (they are small heads in our models).
QUANTIZED_OPS = ("MatMul", "Gather")
# Static QDQ also covers Gemm (the 2-D Linear layers of the MLP and the heads): ORT fuses
# QDQ around Gemm into QGemm.
STATIC_QUANTIZED_OPS = ("MatMul", "Gemm", "Gather")


def _pre_process(src: Path, dst: Path) -> None:
    """ORT's recommended pre-quantization pass: symbolic shape inference + optimization.

    quantize_dynamic fails on graphs from torch's dynamo exporter without it; the pass
    re-infers shapes along the dynamic axes and folds constants (e.g. transposed
    weights) so MatMul weights are plain initializers the quantizer can rewrite.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # When inference is incomplete ORT dumps sym_shape_infer_temp.onnx plus a
    # model-sized <uuid>.data into the working directory; run from dst's (temporary)
    # folder so the dump is deleted with it. Paths are absolute for the same reason.
    # chdir is process-wide: quantize from one thread at a time.
    with contextlib.chdir(dst.parent):
        try:
            quant_pre_process(src, dst, skip_optimization=False)
        except Exception as e:  # ORT raises a bare Exception for incomplete inference
            if "symbolic shape inference" not in str(e):
                raise
            # auto_merge assumes symbolic dims that cannot be proven equal are equal;
            # it is only tried when exact inference fails, and said so in the log.
            log.warning("Symbolic shape inference of %s was incomplete (%s); retrying with "
                        "auto_merge=True", src, e)
            quant_pre_process(src, dst, skip_optimization=False, auto_merge=True)


# Weights are quantized to 7 bits (|w| <= 64). onnxruntime's u8 x s8 kernels on x86 CPUs
# without VNNI (AVX2, AVX-512 before VNNI, e.g. AMD EPYC before Zen 4) add pairs of
# products in 16 bits with saturation, and 255 x 127 x 2 overflows it: on such a machine
# the int8 MLP's logits moved by 0.064 against fp32 and static int8 agreed with fp32 on
# 88% of rows (tests/unit/test_compress_quantize.py, against <= 0.05 and >= 90% on a VNNI
# Xeon). With 7-bit weights the pairs fit, so every CPU computes the same exact integers;
# a model quantized on one machine is scored on executors that may be of another kind.
REDUCE_RANGE = True


def quantize_int8_dynamic(src: str | Path, dst: str | Path, *, per_channel: bool = True
                          ) -> Path:
    """Write an int8 dynamically quantized copy of ``src`` to ``dst`` (one file).

    ``per_channel`` gives each weight column its own scale; on MiniLM it halves the
    probability error against fp32 for no size or speed cost.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src).resolve(), Path(dst).resolve()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        _pre_process(src, prepared)
        quantize_dynamic(
            prepared, dst,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=per_channel,
            # 7-bit weights: see REDUCE_RANGE.
            reduce_range=REDUCE_RANGE,
            use_external_data_format=False,
        )
    from sparkforge.compress.per_row import per_row_activations

    per_row_activations(dst)
    src_bytes, dst_bytes = src.stat().st_size, dst.stat().st_size
    log.info("Quantized %s (%s bytes) -> %s (%s bytes), int8 %s",
             src, src_bytes, dst, dst_bytes, list(QUANTIZED_OPS))
    if dst_bytes > 0.9 * src_bytes:
        log.warning("%s is %.0f%% of the fp32 size: few weights sit in %s ops (Gemm layers "
                    "stay fp32), so int8 gains little for this model",
                    dst, 100 * dst_bytes / src_bytes, list(QUANTIZED_OPS))
    return dst


class SampleReader:
    """An ORT ``CalibrationDataReader`` over in-memory sample rows, in fixed-shape batches.

    ORT's histogram calibrators (percentile, entropy) stack every batch's activations
    and need equal shapes: text inputs are cut to the sample's longest row once, not per
    batch, and rows beyond a whole number of batches are left out.
    """

    def __init__(self, sample: Mapping[str, np.ndarray], batch_size: int = 32) -> None:
        data = {k: np.ascontiguousarray(v) for k, v in sample.items()}
        if "attention_mask" in data:
            longest = max(int(data["attention_mask"].sum(axis=1).max()), 1) \
                if len(data["attention_mask"]) else 1
            data = {k: np.ascontiguousarray(v[:, :longest]) for k, v in data.items()}
        n = len(next(iter(data.values()))) if data else 0
        if n == 0:
            raise ValueError("static quantization needs at least one calibration row")
        self.batch_size = min(batch_size, n)
        self.n = n - n % self.batch_size
        self.data = {k: v[: self.n] for k, v in data.items()}
        self._pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= self.n:
            return None
        s = slice(self._pos, self._pos + self.batch_size)
        self._pos += self.batch_size
        return {k: v[s] for k, v in self.data.items()}

    def rewind(self) -> None:
        self._pos = 0

    # ORT's CalibrationDataReader accepts any class with get_next (__subclasshook__);
    # its iterator protocol is repeated here so the module need not import onnxruntime.
    def __iter__(self) -> SampleReader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.get_next()
        if batch is None:
            raise StopIteration
        return batch


def quantize_int8_static(src: str | Path, dst: str | Path, sample: Mapping[str, np.ndarray],
                         *, method: str = "percentile", per_channel: bool = True) -> Path:
    """Write a static int8 (QDQ) copy of ``src`` to ``dst``, calibrated on ``sample``.

    ``sample`` maps the model's input names to calibration rows. ``method``: ``minmax``,
    ``percentile`` (99.999th percentile of |activation|, robust to the outliers that make
    minmax ranges too wide for transformers) or ``entropy``.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise ValueError(f"calibration method {method!r}: use one of {sorted(methods)}")

    reader = SampleReader(sample)
    src, dst = Path(src).resolve(), Path(dst).resolve()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        _pre_process(src, prepared)
        # Calibration writes an augmented model to the working directory.
        with contextlib.chdir(tmp):
            quantize_static(
                prepared, dst, reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(STATIC_QUANTIZED_OPS),
                per_channel=per_channel,
                # u8 activations x s8 weights: the combination x86 integer kernels run fast.
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[method],
                reduce_range=REDUCE_RANGE,
                use_external_data_format=False,
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
            )
    log.info("Static int8 (QDQ, %s calibration on %d rows): %s (%s bytes) -> %s (%s bytes)",
             method, reader.n, src, src.stat().st_size, dst, dst.stat().st_size)
    return dst


def convert_fp16(src: str | Path, dst: str | Path) -> Path:
    """Write a float16 copy of ``src`` (float32 inputs/outputs kept) to ``dst``."""
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as e:  # pragma: no cover - ships with onnxruntime
        raise ImportError("fp16 conversion needs onnxruntime.transformers, which needs to be "
                          "installed with onnxruntime (pip install onnxruntime)") from e

    src, dst = Path(src).resolve(), Path(dst).resolve()
    dst.parent.mkdir(parents=True, exist_ok=True)
    model: Any = onnx.load(str(src))
    half = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(half, str(dst))
    log.info("fp16: %s (%s bytes) -> %s (%s bytes)", src, src.stat().st_size, dst,
             dst.stat().st_size)
    return dst
