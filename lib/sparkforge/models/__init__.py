"""Torch models, rebuilt from a JSON-serialisable spec.

A spec is saved next to trained weights so a model can be rebuilt for export or
scoring::

    {"name": "mlp", "num_outputs": 3, "input_dim": 20}
    {"name": "embedding_bag", "num_outputs": 2, "vocab_size": 30522, "bigram_buckets": 65536}
    {"name": "transformer", "num_outputs": 2, "vocab_size": 30522, "num_layers": 2}
    {"name": "minilm", "num_outputs": 2, "freeze_encoder": false, "pretrained": true}

Torch is imported only when a model is built or weights are moved, so the
tokenizer can ask :func:`model_vocab_path` without loading torch.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkforge.models._pretrained import model_vocab_path, pretrained_model_dir

if TYPE_CHECKING:
    import torch

__all__ = [
    "INPUT_DTYPES",
    "MODEL_NAMES",
    "build_model",
    "input_names",
    "load_weights",
    "model_vocab_path",
    "pretrained_model_dir",
    "save_weights",
    "task_input_names",
]

log = logging.getLogger(__name__)

_REQUIRED = object()

# Per model: every accepted spec key and its default (_REQUIRED: must be given).
_SPEC_KEYS: dict[str, dict[str, Any]] = {
    "mlp": {"num_outputs": _REQUIRED, "input_dim": _REQUIRED, "hidden_dim": 128,
            "dropout": 0.1, "activation": "relu", "target_mean": 0.0, "target_std": 1.0},
    "embedding_bag": {"num_outputs": _REQUIRED, "vocab_size": _REQUIRED, "embed_dim": 128,
                      "hidden_dim": 128, "dropout": 0.1, "pad_id": 0, "bigram_buckets": 0},
    "transformer": {"num_outputs": _REQUIRED, "vocab_size": _REQUIRED, "hidden_dim": 128,
                    "num_layers": 2, "num_heads": 4, "ffn_dim": 512, "max_length": 512,
                    "dropout": 0.1},
    "minilm": {"num_outputs": _REQUIRED, "dropout": 0.1, "freeze_encoder": False,
               "pretrained": True},
}
MODEL_NAMES = tuple(_SPEC_KEYS)
_TEXT_INPUTS = ["input_ids", "attention_mask"]
_TABULAR_INPUTS = ["features"]
# numpy dtype of each model input (ONNX graphs are exported with these; the Parquet
# columns may be narrower, e.g. int32 token ids, and are widened before a model call).
INPUT_DTYPES = {"features": "float32", "input_ids": "int64", "attention_mask": "int64"}


def _resolve(spec: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Validate ``spec`` and return (name, constructor kwargs with defaults filled in)."""
    name = spec.get("name")
    if name not in _SPEC_KEYS:
        raise ValueError(f"model spec name={name!r}: use one of {list(MODEL_NAMES)}")
    allowed = _SPEC_KEYS[name]
    for key in spec:
        if key != "name" and key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"model spec for {name!r} has unknown key {key!r}{hint}; "
                             f"accepted keys: {sorted(allowed)}")
    kwargs = {k: spec.get(k, default) for k, default in allowed.items()}
    missing = [k for k, v in kwargs.items() if v is _REQUIRED]
    if missing:
        raise ValueError(f"model spec for {name!r} is missing {missing}")
    for key in ("num_outputs", "input_dim", "vocab_size"):
        if key in kwargs and (not isinstance(kwargs[key], int) or kwargs[key] < 1):
            raise ValueError(f"model spec {key}={kwargs[key]!r}: use a positive integer")
    return name, kwargs


def build_model(spec: Mapping[str, Any]) -> torch.nn.Module:
    """Build the untrained (or, for ``minilm`` with ``pretrained``, pretrained) model."""
    name, kwargs = _resolve(spec)
    log.info("Building model %s with %s", name, kwargs)
    if name == "mlp":
        from sparkforge.models.mlp import MLP
        return MLP(**kwargs)
    if name == "embedding_bag":
        from sparkforge.models.embedding_bag import EmbeddingBagClassifier
        return EmbeddingBagClassifier(**kwargs)
    if name == "transformer":
        from sparkforge.models.transformer import TransformerClassifier
        return TransformerClassifier(**kwargs)
    from sparkforge.models.minilm import MiniLMClassifier
    return MiniLMClassifier(**kwargs)


def input_names(spec: Mapping[str, Any]) -> list[str]:
    """Positional ``forward`` inputs (and ONNX input names) for the model of ``spec``."""
    name, _ = _resolve(spec)
    return task_input_names(text=name != "mlp")


def task_input_names(*, text: bool) -> list[str]:
    """The model inputs of a text or a tabular task (every text model takes token ids and
    their mask, every tabular model the encoded feature vector): for stages that know the
    task (``Config.is_text``) but have not loaded a model spec."""
    return list(_TEXT_INPUTS if text else _TABULAR_INPUTS)


def save_weights(model: torch.nn.Module, path: str | Path) -> Path:
    """Write the model's state dict to a safetensors file (shared tensors are de-duplicated)."""
    from safetensors.torch import save_model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path))
    return path


def load_weights(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load a safetensors state dict written by :func:`save_weights` (strict) onto CPU."""
    from safetensors.torch import load_model

    load_model(model, str(path), strict=True, device="cpu")
    return model
