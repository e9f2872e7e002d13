"""A compressed variant's torch form, for ``score.backend=torch``.

Beside ``compressed/<variant>/model.onnx``, a variant that is a plain float32 torch module
also gets ``model.safetensors`` (its state dict) and ``model.json`` (the spec that
``build_model`` rebuilds it from): fp32 (the trained model), ``pruned`` when pruning left a
shape a spec can state, and ``distilled`` (the student). A variant is saved only when
``build_model(spec)`` has exactly its state dict (names, shapes, dtypes), so scoring's
strict load cannot fail on it. The others have no torch form and score on onnxruntime:
int8 and fp16 graphs (converted by ONNX Runtime's tooling, not torch modules), the
scikit-learn baseline, a pruned MiniLM or transformer (heads and FFN units per layer are
not spec keys) and a vocabulary-pruned text model (its remapped embedding is not either).

What compress saved, or why not, is recorded per variant under ``torch`` in
``compressed/selection.json`` (:func:`torch_entries`); the files' sha256 in the manifest.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparkforge.artifacts import write_json_atomic
from sparkforge.models import build_model, save_weights

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"
# Why a variant that compress never offers a torch module for has none.
_NO_MODULE = {
    "baseline": "the scikit-learn baseline exists only as an ONNX graph",
    "fp16": "an fp16 graph converted from the fp32 ONNX file, not a torch module",
}
_INT8 = "an int8 graph quantized by ONNX Runtime, not a torch module"


class NoTorchForm(ValueError):
    """The module cannot be rebuilt from a model spec (the message says why)."""


def _layout(model: nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def torch_spec(model: nn.Module, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec ``build_model`` turns into a module with exactly ``model``'s state dict:
    ``spec`` itself, with ``hidden_dim`` read from the module for the feed-forward models
    that pruning narrows (every hidden layer keeps the same width). Raises
    :class:`NoTorchForm` when no spec does, or when a floating tensor is not float32."""
    name = spec["name"]
    candidate = dict(spec)
    if name in ("mlp", "embedding_bag"):
        seq = getattr(model, "net" if name == "mlp" else "head", None)
        linears = [m for m in seq if isinstance(m, nn.Linear)] if seq is not None else []
        if len(linears) > 1:
            candidate["hidden_dim"] = linears[0].out_features
    have = _layout(model)
    odd = sorted(k for k, (_, dt) in have.items() if dt.is_floating_point
                 and dt != torch.float32)
    if odd:
        raise NoTorchForm(f"not a float32 module ({odd[0]} is {have[odd[0]][1]})")
    with torch.device("meta"):  # shapes only: nothing allocated
        want = _layout(build_model(candidate))
    if have != want:
        diff = sorted(set(have) ^ set(want)) or sorted(k for k in have if have[k] != want[k])
        raise NoTorchForm(f"its {name} architecture is not one a model spec builds "
                          f"(state dict differs at {diff[0]!r}, {len(diff)} entries)")
    return candidate


def save_torch_form(model: nn.Module, spec: Mapping[str, Any], folder: Path) -> dict[str, Path]:
    """Write ``folder/model.safetensors`` and ``folder/model.json`` for ``model``; raise
    :class:`NoTorchForm` (after removing files an earlier run left) when it has none."""
    weights, spec_path = folder / WEIGHTS_FILE, folder / SPEC_FILE
    try:
        rebuilt = torch_spec(model, spec)
    except NoTorchForm:
        weights.unlink(missing_ok=True)
        spec_path.unlink(missing_ok=True)
        raise
    save_weights(model, weights)
    write_json_atomic(spec_path, rebuilt)
    log.info("Saved the torch form of %s: %s + %s", folder.name, weights.name, spec_path.name)
    return {"weights": weights, "spec": spec_path}


def torch_entries(out: Path, variants: Mapping[str, Path],
                  saved: Mapping[str, dict[str, Path] | str]) -> dict[str, dict[str, str]]:
    """selection.json's ``torch`` section: per variant of ``variants`` (name -> ONNX file),
    ``{"weights", "spec"}`` paths relative to ``out``, or ``{"reason"}`` it has none.
    ``saved``: what :func:`save_torch_form` wrote per variant, or why it refused."""
    entries: dict[str, dict[str, str]] = {}
    for name in variants:
        got = saved.get(name)
        if isinstance(got, dict):
            entries[name] = {k: str(p.relative_to(out)) for k, p in got.items()}
        else:
            reason = got or _NO_MODULE.get(name) or (
                _INT8 if "int8" in name else "compress saved no torch module for it")
            entries[name] = {"reason": reason}
    return entries


def torch_files(out: Path, entries: Mapping[str, Mapping[str, str]]) -> list[Path]:
    """The files of ``entries`` (:func:`torch_entries`), for the manifest."""
    return [out / e[k] for e in entries.values() if "weights" in e for k in ("weights", "spec")]
