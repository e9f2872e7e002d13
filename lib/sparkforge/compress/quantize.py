"""Post-training dynamic int8 quantization of exported ONNX models (ONNX Runtime).

Weights of MatMul and Gather (embedding tables) become int8; activations are
quantized on the fly at run time, so no calibration data is needed.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

# MatMul covers every Linear layer applied to 3-D activations (the transformer's
# projections and FFN); Gather covers embedding tables, which are most of a text
# model's bytes. 2-D Linear layers export as Gemm, which ORT has no dynamic int8
# kernel for: they stay fp32 (they are small heads in our models).
QUANTIZED_OPS = ("MatMul", "Gather")


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
            use_external_data_format=False,
        )
    src_bytes, dst_bytes = src.stat().st_size, dst.stat().st_size
    log.info("Quantized %s (%s bytes) -> %s (%s bytes), int8 %s",
             src, src_bytes, dst, dst_bytes, list(QUANTIZED_OPS))
    if dst_bytes > 0.9 * src_bytes:
        log.warning("%s is %.0f%% of the fp32 size: few weights sit in %s ops (Gemm layers "
                    "stay fp32), so int8 gains little for this model",
                    dst, 100 * dst_bytes / src_bytes, list(QUANTIZED_OPS))
    return dst
