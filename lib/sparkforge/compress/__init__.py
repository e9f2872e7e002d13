"""Model compression and export: ONNX export, parity checks, int8 quantization.

Re-exports resolve lazily: importing a light submodule (or this package for its
names) does not pay for torch and onnxruntime until a function is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sparkforge.compress.onnx_export import check_parity, export_onnx
    from sparkforge.compress.quantize import quantize_int8_dynamic

__all__ = ["check_parity", "export_onnx", "quantize_int8_dynamic"]

_LAZY = {
    "check_parity": "sparkforge.compress.onnx_export",
    "export_onnx": "sparkforge.compress.onnx_export",
    "quantize_int8_dynamic": "sparkforge.compress.quantize",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
