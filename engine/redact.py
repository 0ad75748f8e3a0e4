"""PII redaction (seed 003 policy): e-mail addresses, phone numbers, card numbers, passports.

`redact(text)` replaces each finding with a typed placeholder (`[email]`, `[card]`, `[phone]`,
`[passport]`) and leaves everything else byte for byte. Patterns are deliberately shaped
(grouping, prefixes, the Luhn check) so ordinary numbers, dates, times and prices survive.
"""

from __future__ import annotations

import re
from collections.abc import Callable

PLACEHOLDERS = ("[email]", "[card]", "[phone]", "[passport]")

_EMAIL = re.compile(
    r"(?<![\w.+-])[\w.+-]*\w@[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)+",
)
# A run of digit groups separated by one space or hyphen; cards are found inside runs, so a
# year or an amount just before a card ("01.01.1990 4000 0000 0000 0002") cannot hide it.
_DIGIT_RUN = re.compile(r"(?<![\d+])\d+(?:[ -]\d+)*(?![\d-])")
_GROUP = re.compile(r"\d+")
# +country and 9-14 more digits in any grouping; Russian trunk 8 or 7 with 10 digits.
_PHONE = re.compile(
    r"(?<![\w+])\+\d(?:[ \-()]{0,2}\d){9,14}(?!\d)"
    r"|(?<![\w+])[78][ \-(]{0,2}\d{3}[ \-)]{0,2}\d{3}[ -]?\d{2}[ -]?\d{2}(?!\d)"
)
# Russian internal (series 2+2, number 6: "45 06 123456"), Russian foreign ("75 1234567"),
# and the common two-letters-seven-digits shape of other countries ("AB1234567").
_PASSPORT = re.compile(
    r"(?<![\w-])(?:\d{2} ?\d{2} ?\d{6}|\d{2} \d{7}|[A-Z]{2}\d{7})(?![\w-])",
)


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn checksum (as every payment card does)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_card(groups: list[str]) -> bool:
    """13-19 digits passing Luhn: one contiguous group, or groups of four and a last group
    of one to seven digits (at least three groups of four)."""
    digits = "".join(groups)
    if not 13 <= len(digits) <= 19 or not luhn_valid(digits):
        return False
    if len(groups) == 1:
        return True
    return len(groups) >= 4 and all(len(g) == 4 for g in groups[:-1]) and len(groups[-1]) <= 7


def _card(match: re.Match[str]) -> str:
    """The run with its card numbers replaced: every group inside any card-shaped window of
    its groups is covered (two overlapping candidates are both hidden, never half of one)."""
    run = match.group()
    spans = [(g.start(), g.end()) for g in _GROUP.finditer(run)]
    covered = [False] * len(spans)
    for i in range(len(spans)):
        for j in range(i + 1, len(spans) + 1):
            if _is_card([run[a:b] for a, b in spans[i:j]]):
                covered[i:j] = [True] * (j - i)
    if not any(covered):
        return run
    out, cursor, i = [], 0, 0
    while i < len(spans):
        if not covered[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(spans) and covered[j + 1]:
            j += 1
        out += [run[cursor : spans[i][0]], "[card]"]
        cursor, i = spans[j][1], j + 1
    return "".join([*out, run[cursor:]])


def _constant(placeholder: str) -> Callable[[re.Match[str]], str]:
    return lambda _: placeholder


_RULES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (_EMAIL, _constant("[email]")),
    (_DIGIT_RUN, _card),
    (_PHONE, _constant("[phone]")),
    (_PASSPORT, _constant("[passport]")),
)


def redact(text: str) -> str:
    """`text` with every e-mail, phone, card and passport number replaced by a placeholder.

    Idempotent: placeholders hold nothing that any rule matches.
    """
    if not text:
        return text
    for pattern, replace in _RULES:
        text = pattern.sub(replace, text)
    return text


def contains_pii(text: str) -> bool:
    """Whether `redact` would change `text`."""
    return redact(text) != text
