"""Splitting long replies into Telegram messages.

Telegram accepts at most 4096 characters per message, counted in UTF-16 code units (an emoji
outside the Basic Multilingual Plane counts twice). A long reply is cut at the last paragraph
break that fits, else a line break, else a sentence end, else a space, and only as a last
resort inside a word (never inside a surrogate pair).
"""

from __future__ import annotations

import re

TELEGRAM_LIMIT = 4096

_BOUNDARIES = (
    re.compile(r"\n\s*\n"),  # paragraphs
    re.compile(r"\n"),  # lines
    re.compile(r"(?<=[.!?…])[\"»”)]*\s+"),  # sentences
    re.compile(r"\s+"),  # words
)


def utf16_len(text: str) -> int:
    """Length as Telegram counts it."""
    return len(text.encode("utf-16-le")) // 2


def split_message(text: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """`text` in pieces of at most `limit` UTF-16 units, cut at the best boundary.

    Pieces are stripped of the whitespace at the cut; an all-whitespace text gives no pieces.
    """
    if limit < 2:
        raise ValueError("limit must be at least 2 (one astral character)")
    pieces: list[str] = []
    rest = text.strip()
    while rest:
        if utf16_len(rest) <= limit:
            pieces.append(rest)
            break
        head_end = _fit(rest, limit)
        cut_start, cut_end = _best_cut(rest, head_end)
        piece = rest[:cut_start].rstrip()
        if not piece:  # the boundary was at the very start: cut hard instead
            cut_start = cut_end = head_end
            piece = rest[:head_end]
        pieces.append(piece)
        rest = rest[cut_end:].lstrip()
    return pieces


def _fit(text: str, limit: int) -> int:
    """The largest index i such that text[:i] fits in `limit` UTF-16 units."""
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)


def _best_cut(text: str, end: int) -> tuple[int, int]:
    """Where to cut inside text[:end]: (end of the piece, start of the rest)."""
    window = text[:end]
    # A boundary right at the limit counts: the separator itself may lie past `end`.
    probe = text[: end + 2]
    for pattern in _BOUNDARIES:
        last = None
        for match in pattern.finditer(probe):
            if 0 < match.start() <= end:
                last = match
        if last is not None:
            return last.start(), last.end()
    return len(window), len(window)
