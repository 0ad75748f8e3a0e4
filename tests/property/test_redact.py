"""Redaction properties: generated PII never survives, plain text is untouched, idempotence."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.redact import PLACEHOLDERS, redact
from specs.strategies import pii, plain_texts


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


@given(
    before=plain_texts, item=pii, after=plain_texts, glue=st.sampled_from((" ", ": ", ", ", "\n"))
)
def test_generated_pii_never_survives(before: str, item: tuple[str, str], after: str, glue: str):
    placeholder, value = item
    text = f"{before}{glue}{value}{glue}{after}"
    out = redact(text)
    assert value not in out
    assert placeholder in out
    assert out == f"{redact(before)}{glue}{placeholder}{glue}{redact(after)}"


@given(item=pii)
def test_pii_alone_becomes_its_placeholder(item: tuple[str, str]):
    placeholder, value = item
    assert redact(value) == placeholder
    assert _digits(placeholder) == ""


@given(text=plain_texts)
def test_text_without_pii_is_unchanged(text: str):
    assert redact(text) == text


@given(text=st.one_of(plain_texts, st.text(max_size=80)), items=st.lists(pii, max_size=3))
def test_redaction_is_idempotent(text: str, items: list[tuple[str, str]]):
    mixed = " ".join([text, *(v for _, v in items)])
    once = redact(mixed)
    assert redact(once) == once


@given(items=st.lists(pii, min_size=2, max_size=4))
def test_several_findings_in_one_message(items: list[tuple[str, str]]):
    text = " и ".join(v for _, v in items)
    out = redact(text)
    assert out == " и ".join(p for p, _ in items)
    assert set(out.split(" и ")) <= set(PLACEHOLDERS)
