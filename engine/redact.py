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
# 13-19 digits, contiguous or in groups of four separated by one space or hyphen.
_CARD = re.compile(r"(?<![\d+])(?:\d{13,19}|\d{4}(?:[ -]\d{4}){2}[ -]\d{1,7})(?![\d-])")
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


def _card(match: re.Match[str]) -> str:
    digits = "".join(ch for ch in match.group() if ch.isdigit())
    if 13 <= len(digits) <= 19 and luhn_valid(digits):
        return "[card]"
    return match.group()


def _constant(placeholder: str) -> Callable[[re.Match[str]], str]:
    return lambda _: placeholder


_RULES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (_EMAIL, _constant("[email]")),
    (_CARD, _card),
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
