"""``_BatchEncoder`` (what ``tokenize_df`` runs per Arrow batch) against the tokenizer's own
padded encodings, for every padding setup: the numpy fast path (fixed length, right
padding) and the fallback for everything else (left padding, pad_to_multiple_of, batch
longest, no padding, rows longer than the pad length when truncation is off)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sparkforge.tokenize import _BatchEncoder, encode, load_pretrained

TEXTS = [
    "a gripping, beautifully shot film",
    "",
    "dull.",
    "the plot meanders for two hours and never finds anything worth saying about its "
    "characters, who wander from scene to scene",
    "Ünïcödé and emoji 🎬 survive",
    "x",
]


def _setups() -> dict[str, Callable[[Any], None]]:
    def fixed_right(tok: Any) -> None:
        pass  # load_pretrained's own setup: truncation + right padding to max_length

    def fixed_left(tok: Any) -> None:
        tok.enable_padding(length=16, direction="left", pad_id=0, pad_token="[PAD]")

    def multiple_of(tok: Any) -> None:
        tok.enable_padding(pad_to_multiple_of=8, pad_id=0, pad_token="[PAD]")

    def longest(tok: Any) -> None:
        tok.enable_padding(pad_id=0, pad_token="[PAD]")

    def none(tok: Any) -> None:
        tok.no_padding()

    def over_length(tok: Any) -> None:
        tok.no_truncation()  # right padding to 16, but the long text is longer

    return {f.__name__: f for f in (fixed_right, fixed_left, multiple_of, longest, none,
                                    over_length)}


@pytest.mark.parametrize("setup", list(_setups()))
def test_batch_encoder_equals_the_tokenizers_padded_encoding(setup: str) -> None:
    reference, ours = load_pretrained(16), load_pretrained(16)
    for tok in (reference, ours):
        _setups()[setup](tok)
    enc = _BatchEncoder(ours)
    assert (enc.length is not None) == (setup in ("fixed_right", "over_length"))
    for texts in (TEXTS, TEXTS[:1], []):
        want_ids, want_mask = encode(reference, texts)
        ids, mask = enc(texts)
        assert ids.to_pylist() == want_ids
        assert mask.to_pylist() == want_mask
    if setup == "over_length":
        assert len(encode(reference, TEXTS)[0][3]) > 16  # the fallback branch was taken
