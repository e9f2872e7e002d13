"""Random padded text batches for the export / quantize / prune tests."""

from __future__ import annotations

import numpy as np


def text_batch(rng: np.random.Generator, batch: int, seq: int, vocab: int, *,
               min_len: int = 1, full_first: bool = True) -> dict[str, np.ndarray]:
    """``input_ids`` (ids >= 1, 0 after each row's length) and ``attention_mask``, int64.

    ``full_first``: row 0 spans the whole sequence, so no batch is all padding at the end.
    """
    lengths = rng.integers(min_len, seq + 1, size=batch)
    if full_first:
        lengths[0] = seq
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": rng.integers(1, vocab, size=(batch, seq)) * mask,
            "attention_mask": mask}
