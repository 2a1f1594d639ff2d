"""The Engram token normaliser and compressed-token map (v4_math.md §5.3 (a)) on hand-written cases."""

from __future__ import annotations

import pytest
import torch

from v4_ascend import ops


@pytest.mark.parametrize("text,expected", [
    ("Hello", "hello"),
    (" The", "the"),
    ("THE", "the"),
    ("café", "cafe"),  # precomposed é: NFD splits off the accent, which is stripped
    ("cafe\u0301", "cafe"),
    ("CAFÉ", "cafe"),
    ("\ufb01", "fi"),  # NFKC ligature
    ("\uff21\uff22", "ab"),  # full-width letters
    ("\u2460", "1"),  # circled digit
    (" ", " "),  # a lone space survives Strip through the sentinel
    ("  ", " "),  # ... and so does a run of them, collapsed first
    ("\t", " "),
    ("\r\n", " "),
    (" a \t b ", "a b"),
    ("\u3000x\u00a0", "x"),  # ideographic / no-break spaces: NFKC makes them spaces, then stripped
    ("\u2003y", "y"),  # em space
    ("ΟΔΟΣ", "οδοσ"),  # per-character lowercase: no final-sigma rule (str.lower() would give 'οδος')
    ("\u0915\u093e", "\u0915"),  # spacing combining mark (Mc) is a mark too, and is stripped
    ("\x1cA", "\x1ca"),  # U+001C is not White_Space (str.strip() would remove it)
    ("a\u200b", "a\u200b"),  # zero-width space is not White_Space either
    ("\u0130", "i"),  # I with dot above: NFD -> I + U+0307, mark stripped, lowercased
    ("\u0301", ""),  # only a combining mark: normalises to nothing
])
def test_normaliser(text, expected):
    assert ops.normalise_token_text(text) == expected


def test_map_shares_ids_in_first_seen_order():
    texts = ["<pad>", "The", " the", "THE", "café", "cafe", "x", "\u0301", "\u0300", " ", "\t\t", ""]
    lookup, size = ops.build_compressed_token_map(texts)
    assert lookup.dtype == torch.int64
    # "<pad>" 0; the 1; cafe 2; x 3; U+0301 and U+0300 normalise to "" and keep their raw text: 4, 5;
    # " " 6; "" keeps its raw text "" (7).
    assert lookup.tolist() == [0, 1, 1, 1, 2, 2, 3, 4, 5, 6, 6, 7]
    assert size == 8


def test_partial_utf8_tokens_are_keyed_by_their_raw_string():
    texts = ["\ufffd", "\ufffd", "a", "\ufffd"]
    raw = ["<0xE2>", "<0x82>", "a", "<0xE2>"]
    lookup, size = ops.build_compressed_token_map(texts, raw)
    assert lookup.tolist() == [0, 1, 2, 0] and size == 3
    # Without raw strings the decoded text itself is the key (not normalised: "\ufffdA" stays upper case).
    lookup, size = ops.build_compressed_token_map(["\ufffd", "\ufffd", "\ufffdA", "\ufffda"])
    assert lookup.tolist() == [0, 0, 1, 2] and size == 3


def test_map_feeds_the_hash():
    """The compressed ids and their count are what engram_layout and engram_hash consume."""
    texts = ["<pad>", "Hello", " hello", "world", " World", "!"]
    lookup, size = ops.build_compressed_token_map(texts)
    layout = ops.engram_layout([1], 3, 2, 100, size)[0]
    raw = torch.tensor([[1, 3, 5], [2, 4, 5]])
    rows = ops.engram_hash(lookup[raw], layout.multipliers, layout.moduli, layout.offsets, int(lookup[0]))
    assert torch.equal(rows[0], rows[1])  # the two sentences differ only in case and spaces


@pytest.mark.parametrize("texts,raw,arg", [
    ([], None, "'texts'"),
    (["a", 3], None, "'texts'"),
    (["a", "b"], ["a"], "'raw_tokens'"),
])
def test_bad_arguments(texts, raw, arg):
    with pytest.raises(ValueError, match=arg):
        ops.build_compressed_token_map(texts, raw)
