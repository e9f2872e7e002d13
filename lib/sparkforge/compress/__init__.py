"""Model compression and export: ONNX export and parity, int8 (dynamic, static) and fp16
conversion, structured pruning, distillation (``distill``) and the accuracy gate (``gate``).

Re-exports resolve lazily: importing a light submodule (or this package for its
names) does not pay for torch and onnxruntime until a function is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sparkforge.compress.onnx_export import check_parity, export_onnx
    from sparkforge.compress.prune import count_parameters, prune_model
    from sparkforge.compress.quantize import (
        convert_fp16,
        quantize_int8_dynamic,
        quantize_int8_static,
    )

__all__ = ["check_parity", "convert_fp16", "count_parameters", "export_onnx", "prune_model",
           "quantize_int8_dynamic", "quantize_int8_static"]

_LAZY = {
    "check_parity": "sparkforge.compress.onnx_export",
    "export_onnx": "sparkforge.compress.onnx_export",
    "quantize_int8_dynamic": "sparkforge.compress.quantize",
    "quantize_int8_static": "sparkforge.compress.quantize",
    "convert_fp16": "sparkforge.compress.quantize",
    "prune_model": "sparkforge.compress.prune",
    "count_parameters": "sparkforge.compress.prune",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
