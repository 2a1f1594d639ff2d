"""Engram tokenizer compression (v4_math.md §5.3 (a)): raw token id -> canonical (compressed) id.

The normaliser reproduces the ``tokenizers`` normaliser sequence the V4.1 code uses (NFKC, NFD,
StripAccents, Lowercase, whitespace collapse, lone-space sentinel, Strip, restore) with the Python
standard library, character class by character class, so the package does not need ``tokenizers``.
Results can differ from the Rust library only where Python's and Rust's Unicode tables differ.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import torch

# A private-use character stands in for a token that is exactly one space, so Strip keeps it.
_LONE_SPACE_SENTINEL = "\ue000"
# Only these four characters are collapsed (the normaliser's regex is ``[ \t\r\n]+``).
_WHITESPACE_RUN = re.compile(r"[ \t\r\n]+")
# Unicode White_Space: what Rust's ``char::is_whitespace`` (and so Strip) removes. Python's
# ``str.strip()`` would also remove U+001C..U+001F, which are not White_Space.
_WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
_REPLACEMENT_CHARACTER = "\ufffd"


def normalise_token_text(text: str) -> str:
    """The Engram normaliser applied to one decoded token text (may return ``""``).

    NFKC; NFD; drop every combining mark (General_Category M*, as the ``tokenizers`` StripAccents);
    lowercase character by character (no context rules such as the final sigma, as ``tokenizers``);
    collapse runs of ``[ \\t\\r\\n]`` to one space; protect a text that is then exactly one space;
    strip Unicode White_Space at both ends; restore the protected space.
    """
    s = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text))
    s = "".join(c for c in s if not unicodedata.category(c).startswith("M"))
    s = "".join(c.lower() for c in s)
    s = _WHITESPACE_RUN.sub(" ", s)
    if s == " ":
        s = _LONE_SPACE_SENTINEL
    return s.strip(_WHITE_SPACE).replace(_LONE_SPACE_SENTINEL, " ")


def build_compressed_token_map(
    texts: Sequence[str], raw_tokens: Sequence[str] | None = None
) -> tuple[torch.Tensor, int]:
    """Map every token id to its compressed id, in first-seen order over ids ``0..V-1``.

    The key of token ``i`` is:
    - ``raw_tokens[i]`` (its raw vocabulary string) when its decoded text contains U+FFFD (a partial
      UTF-8 byte token: decoding lost its identity), or ``texts[i]`` when ``raw_tokens`` is None;
    - otherwise :func:`normalise_token_text` of ``texts[i]``, or ``texts[i]`` itself when that
      normalises to the empty string.
    Tokens with equal keys share one compressed id; ids are assigned in order of first appearance.

    Args:
        texts: ``V`` decoded token texts (``tokenizer.decode([i])``, special tokens kept), by token id.
        raw_tokens: ``V`` raw token strings (``tokenizer.convert_ids_to_tokens(i)``), needed for
            byte-level vocabularies whose partial-UTF-8 tokens all decode to U+FFFD.

    Returns:
        ``(lookup, size)``: ``lookup [V]`` int64 compressed id of each token id, and ``size``, the number
        of compressed ids (V4.1-Flash: 99,092; the hash multipliers depend on it).

    Raises:
        ValueError: when ``texts`` is empty, holds a non-string, or ``raw_tokens`` has another length.
    """
    if len(texts) == 0 or not all(isinstance(t, str) for t in texts):
        raise ValueError("build_compressed_token_map: 'texts' must be a non-empty sequence of str")
    if raw_tokens is not None and len(raw_tokens) != len(texts):
        raise ValueError(
            f"build_compressed_token_map: 'raw_tokens' must have len(texts) = {len(texts)} entries, "
            f"got {len(raw_tokens)}"
        )
    ids: dict[str, int] = {}
    lookup = []
    for i, text in enumerate(texts):
        if _REPLACEMENT_CHARACTER in text:
            key = text if raw_tokens is None else raw_tokens[i]
        else:
            key = normalise_token_text(text) or text
        lookup.append(ids.setdefault(key, len(ids)))
    return torch.tensor(lookup, dtype=torch.int64), len(ids)
