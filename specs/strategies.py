"""Hypothesis strategies for conversations: users, message texts in both languages, PII-free."""

from __future__ import annotations

from hypothesis import strategies as st

USERS = ("u0", "u1", "u2")

user_ids = st.sampled_from(USERS)

russian_words = st.sampled_from(
    ("привет", "сэр", "чай", "погода", "встреча", "кот", "ужин", "письмо", "поезд", "спасибо")
)
english_words = st.sampled_from(
    ("hello", "sir", "tea", "weather", "meeting", "cat", "dinner", "letter", "train", "thanks")
)

message_texts = st.lists(st.one_of(russian_words, english_words), min_size=1, max_size=12).map(
    " ".join
)
"""Short natural-looking messages, mixing Russian and English words."""

bursts = st.integers(min_value=1, max_value=6)
"""How many messages a user sends before the actor gets to run."""

voice_kinds = st.sampled_from(("", "", "", "heard", "bad", "busy"))
"""What each message of a burst is: text (most often), or a voice note the transcriber hears,
cannot decode, or has no slot for."""

burst_kinds = st.lists(voice_kinds, min_size=1, max_size=6)
"""A burst: the kind of each message a user sends before the actor gets to run."""

edit_choices = st.one_of(st.none(), st.integers(min_value=0, max_value=5))
"""Which message of a burst (if any, and if it is text) the user edits while it waits."""

lateness = st.sampled_from((0.0, 0.0, 0.0, 31.0, 61.0))
"""How long a burst waits before its actor takes it (past the cool-down, or not at all)."""

time_steps = st.sampled_from((0.5, 1.0, 5.0, 31.0, 61.0, 120.0))
"""Clock advances: below, just past and far past the breaker cool-down and the store retry;
several of them pass the idle timeout (passivation)."""


# -- PII, for the redaction properties --------------------------------------------------------

_digits = st.text(alphabet="0123456789", min_size=1, max_size=1)


def _luhn_complete(body: str) -> str:
    """`body` plus the check digit that makes it pass Luhn."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def _digit_string(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789", min_size=n, max_size=n)


_local_parts = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,14}[a-z0-9]", fullmatch=True).filter(
    lambda s: ".." not in s
)
_labels = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
emails = st.builds(
    lambda local, labels, tld: f"{local}@{'.'.join(labels)}.{tld}",
    _local_parts,
    st.lists(_labels, min_size=1, max_size=3),
    st.sampled_from(("ru", "com", "org", "yandex.ru", "co.uk", "io")),
)
"""E-mail addresses: dotted, plus-tagged, subdomains."""


def _ru_phone(parts: tuple[str, str, str, str, str]) -> str:
    prefix, code, a, b, c = parts
    layouts = {
        "+7 ": f"+7 {code} {a}-{b}-{c}",
        "+7(": f"+7 ({code}) {a}-{b}-{c}",
        "+7": f"+7{code}{a}{b}{c}",
        "8(": f"8 ({code}) {a}-{b}-{c}",
        "8-": f"8-{code}-{a}-{b}-{c}",
        "8": f"8{code}{a}{b}{c}",
    }
    return layouts[prefix]


phones = st.one_of(
    st.tuples(
        st.sampled_from(("+7 ", "+7(", "+7", "8(", "8-", "8")),
        _digit_string(3),
        _digit_string(3),
        _digit_string(2),
        _digit_string(2),
    ).map(_ru_phone),
    st.builds(
        lambda cc, rest: f"+{cc} {rest[:3]} {rest[3:6]} {rest[6:]}",
        st.sampled_from(("1", "44", "49", "33", "380", "375")),
        _digit_string(9),
    ),
)
"""Phone numbers: Russian (+7 and trunk 8, with and without grouping) and international."""


@st.composite
def _cards(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(("4", "51", "55", "2200", "2202")))  # Visa, Mastercard, Mir
    sep = draw(st.sampled_from((" ", "-", "")))
    number = _luhn_complete(prefix + draw(_digit_string(15 - len(prefix))))
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


cards = _cards()
"""16-digit card numbers that pass Luhn, contiguous or grouped by four."""


passports = st.one_of(
    st.builds(
        lambda s, n, layout: layout.format(s[:2], s[2:], n),
        _digit_string(4),
        _digit_string(6),
        st.sampled_from(("{} {} {}", "{}{} {}", "{}{}{}")),
    ),
    st.builds(lambda s, n: f"{s} {n}", _digit_string(2), _digit_string(7)),
)
"""Russian passports: internal ("45 06 123456", "4506 123456") and foreign ("75 1234567")."""

pii = st.one_of(
    emails.map(lambda v: ("[email]", v)),
    phones.map(lambda v: ("[phone]", v)),
    cards.map(lambda v: ("[card]", v)),
    passports.map(lambda v: ("[passport]", v)),
)
"""(placeholder, value) pairs of every kind of PII."""

_plain_numbers = st.one_of(
    st.integers(min_value=0, max_value=99_999).map(str),
    st.builds(
        lambda d, m, y: f"{d:02d}.{m:02d}.{y}",
        st.integers(1, 28),
        st.integers(1, 12),
        st.integers(1990, 2030),
    ),
    st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59)),
    st.builds(lambda n: f"{n:,}".replace(",", " ") + " ₽", st.integers(1000, 999_999)),
)
_chunks = st.one_of(
    russian_words,
    english_words,
    st.tuples(st.one_of(russian_words, english_words), _plain_numbers).map(" ".join),
)
plain_texts = st.lists(_chunks, min_size=1, max_size=10).map(" ".join)
"""Messages with words, small numbers, dates, times and prices, but no PII."""
