"""Export a trained model to one self-contained ONNX file and check it against torch.

Uses torch's ``torch.export``-based exporter (``dynamo=True``). The batch axis is
dynamic for every model; text models also get a dynamic sequence axis so each
scoring batch can be padded only to its own longest row.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparkforge.models import input_names

log = logging.getLogger(__name__)

# Opset 18 is what torch's exporter emits natively (no version conversion pass) and
# what ONNX Runtime's quantization tooling handles; any ORT >= 1.14 runs it.
OPSET = 18
OUTPUT_NAME = "logits"


def _dynamic_shapes(names: list[str]) -> dict[str, dict[int, Any]]:
    batch = torch.export.Dim("batch")
    if names == ["features"]:
        return {"features": {0: batch}}
    # Both text inputs share their dims: torch.export must know input_ids and
    # attention_mask always have the same [batch, seq] shape.
    seq = torch.export.Dim("seq")
    return {name: {0: batch, 1: seq} for name in names}


def _example_args(example: Mapping[str, np.ndarray], names: list[str]
                  ) -> tuple[torch.Tensor, ...]:
    """Example inputs as tensors, with every dynamic axis at least 2 long.

    torch.export treats a size-1 dim as the constant 1, so a one-row (or one-token)
    example would fix that axis in the graph. Rows are repeated, and text inputs get
    an extra masked-out padding column, neither of which changes the traced graph.
    """
    missing = [n for n in names if n not in example]
    if missing:
        raise ValueError(f"example batch lacks inputs {missing}; the model takes {names}")
    arrays = [np.asarray(example[n]) for n in names]
    if arrays[0].shape[0] < 2:
        arrays = [np.concatenate([a, a], axis=0) for a in arrays]
    if names != ["features"] and arrays[0].shape[1] < 2:
        arrays = [np.pad(a, ((0, 0), (0, 1))) for a in arrays]
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)


def export_onnx(model: torch.nn.Module, spec: Mapping[str, Any], path: str | Path,
                example: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Write ``model`` (switched to eval mode) to ``path`` as one ONNX file.

    ``example`` maps input names to arrays used to trace the graph; their sizes do
    not limit the exported model. Returns ``{opset, inputs, output, file_bytes}``.
    """
    path = Path(path)
    names = input_names(spec)
    args = _example_args(example, names)
    model.eval()
    log.info("Exporting %s to %s (opset %s, inputs %s, example shapes %s)",
             spec.get("name"), path, OPSET, names, [tuple(a.shape) for a in args])
    with torch.no_grad(), warnings.catch_warnings():
        # Inputs sharing a Dim make the exporter warn once per extra use of the name;
        # sharing is intended (input_ids and attention_mask have one shape).
        warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used",
                                category=UserWarning)
        program = torch.onnx.export(
            model, args, dynamo=True, input_names=names, output_names=[OUTPUT_NAME],
            dynamic_shapes=_dynamic_shapes(names), opset_version=OPSET,
            optimize=True, verbose=False,
        )
    if program is None:  # only the legacy exporter returns None
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no ONNXProgram")
    path.parent.mkdir(parents=True, exist_ok=True)
    # One file: executors receive a single artifact, no side-car .data file to ship.
    program.save(path, external_data=False)
    meta = {"opset": OPSET, "inputs": names, "output": OUTPUT_NAME,
            "file_bytes": path.stat().st_size}
    log.info("Exported %s: %s bytes", path, meta["file_bytes"])
    return meta


def _probs(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, predicted class): sigmoid for one output, softmax otherwise."""
    logits = logits.astype(np.float64)
    if logits.shape[-1] == 1:
        p = 1.0 / (1.0 + np.exp(-logits))
        return p, (p[:, 0] > 0.5).astype(np.int64)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    return p, p.argmax(axis=-1)


def check_parity(model: torch.nn.Module, onnx_path: str | Path,
                 batch: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Compare torch and ONNX Runtime outputs on ``batch``.

    Returns ``max_abs_logit_diff``, ``max_rel_logit_diff`` (the same divided by the
    output scale, ``max(1, max |torch output|)``: float32 keeps about 7 significant digits,
    so a regression predicting prices in the thousands differs by ~1e-3 in absolute terms
    for the same relative error), ``max_abs_prob_diff`` (softmax, or sigmoid for a single
    output) and ``agreement`` (fraction of rows with the same predicted class).
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feeds = {n: np.ascontiguousarray(batch[n]) for n in names}
    model.eval()
    with torch.no_grad():
        ref = model(*(torch.from_numpy(feeds[n]) for n in names)).numpy()
    got = session.run([OUTPUT_NAME], feeds)[0]
    if got.shape != ref.shape:
        raise AssertionError(f"ONNX output shape {got.shape} != torch output shape {ref.shape}")
    p_ref, y_ref = _probs(ref)
    p_got, y_got = _probs(got)
    result = {
        "max_abs_logit_diff": float(np.abs(ref - got).max()),
        "max_rel_logit_diff": float(np.abs(ref - got).max()
                                    / max(1.0, float(np.abs(ref).max(initial=0.0)))),
        "max_abs_prob_diff": float(np.abs(p_ref - p_got).max()),
        "agreement": float((y_ref == y_got).mean()),
    }
    log.info("Parity of %s on %s rows: %s", onnx_path, len(ref), result)
    return result
